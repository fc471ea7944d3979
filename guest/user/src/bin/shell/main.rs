//! The lazarus shell: runs programs (with pipes and background jobs),
//! manages extensions, and is the kvstore's writer, keeping a ledger of
//! checksums of what it stored so that `kv check` can tell whether the
//! store survived a crash intact.
#![no_std]
#![no_main]

extern crate alloc;

mod jobs;
mod kvcmd;
mod tables;

use alloc::string::String;
use alloc::vec::Vec;

use lazarus_ulib::io::{LINE_MAX, LineReader, STDIN};
use lazarus_ulib::{Args, entry, eprintln, ext, print, println, process};

entry!(main);

/// The test harness and the boot benchmark wait for exactly this.
const PROMPT: &str = "lazarus> ";

/// (name, usage, description) of every command, for `help`.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("help", "help", "list commands"),
    ("ps", "ps", "list processes (CPU: where each last ran)"),
    (
        "cpus",
        "cpus",
        "list CPUs: ticks, idle time, current process",
    ),
    (
        "run",
        "run PROG [ARGS] [| PROG [ARGS]]... [&]",
        "run /bin/PROG (pipeline, background)",
    ),
    ("wait", "wait [PID]", "wait for background jobs (or one)"),
    ("kill", "kill PID", "terminate a process"),
    (
        "crash",
        "crash KIND | list",
        "crash the kernel (in a new process) via /dev/crashtest",
    ),
    (
        "insmod",
        "insmod NAME",
        "load kernel extension /ext/NAME.ko",
    ),
    ("rmmod", "rmmod NAME", "unload a kernel extension"),
    ("lsmod", "lsmod", "list kernel extensions"),
    (
        "recoveries",
        "recoveries",
        "list the kernel's resurrections",
    ),
    (
        "kv",
        "kv put KEY VALUE | get KEY | del KEY",
        "use the key-value store",
    ),
    (
        "",
        "kv list | count | stats | sync",
        "list keys, count them, statistics, flush the disk log",
    ),
    (
        "",
        "kv fill N [PREFIX]",
        "store N keys with deterministic values",
    ),
    ("", "kv check", "verify every key this shell stored"),
    ("sleep", "sleep MS", "sleep for MS milliseconds"),
    ("echo", "echo [WORDS]", "print WORDS"),
    ("exit", "exit", "leave this shell (init starts a new one)"),
    (
        "poweroff",
        "poweroff",
        "flush the kv log, power the machine off",
    ),
];

struct Shell {
    jobs: jobs::Jobs,
    kv: kvcmd::Kv,
}

/// What the main loop does after a command.
enum Next {
    Prompt,
    Exit,
}

fn main(_args: Args) -> i32 {
    // On a terminal (the host's, in raw mode) the shell echoes and edits
    // what is typed; piped input is not echoed.
    let tty = lazarus_ulib::io::is_terminal(STDIN);
    let mut shell = Shell {
        jobs: jobs::Jobs::new(tty),
        kv: kvcmd::Kv::default(),
    };
    let mut input = LineReader::new(STDIN, tty);
    let mut line = String::new();
    loop {
        shell.jobs.reap_finished();
        print!("{PROMPT}");
        match input.read_line(&mut line) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                eprintln!("shell: read: {e}");
                return 1;
            }
        }
        if input.overlong() > 0 {
            eprintln!(
                "shell: line too long ({} bytes, at most {}): not run",
                LINE_MAX + input.overlong(),
                LINE_MAX
            );
            continue;
        }
        if let Next::Exit = shell.execute(&line) {
            return 0;
        }
    }
}

/// Splits a command line into words as a shell does: blanks separate
/// words, `|` and `&` are words of their own even without blanks around
/// them, and '...' or "..." quote (the quotes go; inside, blanks, `|` and
/// `&` are plain characters, so `kv put "x y" 2` stores the key `x y`).
/// An unterminated quote is an error, not a guess.
fn tokenize(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => w.push(x),
                        None => return Err("unterminated quote"),
                    }
                }
            }
            '|' | '&' => {
                words.extend(word.take());
                words.push(String::from(c));
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

impl Shell {
    fn execute(&mut self, line: &str) -> Next {
        let words = match tokenize(line) {
            Ok(words) => words,
            Err(e) => {
                println!("shell: {e}");
                return Next::Prompt;
            }
        };
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let Some((&cmd, args)) = words.split_first() else {
            return Next::Prompt;
        };
        match cmd {
            "help" => help(),
            "ps" => tables::ps(),
            "cpus" => tables::cpus(),
            "lsmod" => tables::lsmod(),
            "recoveries" => tables::recoveries(),
            "run" => self.jobs.run(args),
            "wait" => self.jobs.wait_command(args),
            "kill" => kill(args),
            // The fault runs in a new short-lived process, so the shell
            // is never the offender.
            "crash" => {
                let mut argv = alloc::vec!["crash"];
                argv.extend_from_slice(args);
                self.jobs.run(&argv);
            }
            "insmod" => insmod(args),
            "rmmod" => rmmod(args),
            "kv" => self.kv.command(args),
            "sleep" => sleep(&mut self.jobs, args),
            "echo" => echo(args),
            "exit" => return Next::Exit,
            "poweroff" => {
                self.kv.sync_quietly();
                process::poweroff(0)
            }
            _ => println!("unknown command: {cmd} (try help)"),
        }
        Next::Prompt
    }
}

fn help() {
    use core::fmt::Write;
    let mut out = String::new();
    for (_, usage, what) in COMMANDS {
        let _ = writeln!(out, "  {usage:<40} {what}");
    }
    print!("{out}");
}

/// Prints the usage lines of `cmd` (its row and the unnamed rows after it).
fn usage(cmd: &str) {
    use core::fmt::Write;
    let Some(i) = COMMANDS.iter().position(|c| c.0 == cmd) else {
        return println!("usage: see help");
    };
    let mut out = String::new();
    let rows = core::iter::once(&COMMANDS[i])
        .chain(COMMANDS[i + 1..].iter().take_while(|c| c.0.is_empty()));
    for (_, usage, _) in rows {
        let _ = writeln!(out, "usage: {usage}");
    }
    print!("{out}");
}

/// The single argument of a one-argument command, or a usage line.
fn one_arg<'a>(cmd: &str, args: &[&'a str]) -> Option<&'a str> {
    match args {
        [a] => Some(a),
        _ => {
            usage(cmd);
            None
        }
    }
}

fn kill(args: &[&str]) {
    // `one_arg` already printed the usage for a wrong argument count.
    let Some(arg) = one_arg("kill", args) else {
        return;
    };
    let Ok(pid) = arg.parse::<u32>() else {
        return usage("kill");
    };
    if let Err(e) = process::kill(pid) {
        println!("kill: {e}");
    }
}

fn insmod(args: &[&str]) {
    let Some(name) = one_arg("insmod", args) else {
        return;
    };
    match ext::load(name) {
        Ok(slot) => println!("insmod: {name} loaded in slot {slot}"),
        Err(e) => println!("insmod: {e}"),
    }
}

fn rmmod(args: &[&str]) {
    let Some(name) = one_arg("rmmod", args) else {
        return;
    };
    match ext::unload(name) {
        Ok(()) => println!("rmmod: {name} unloaded"),
        Err(e) => println!("rmmod: {e}"),
    }
}

/// `sleep MS` runs `/bin/sleep` in the foreground, so that Ctrl-C on a
/// terminal interrupts it as it does any job.
fn sleep(jobs: &mut jobs::Jobs, args: &[&str]) {
    match one_arg("sleep", args).map(str::parse::<u64>) {
        Some(Ok(_)) => jobs.run(&["sleep", args[0]]),
        Some(Err(_)) => usage("sleep"),
        None => {}
    }
}

fn echo(args: &[&str]) {
    let mut out = args.join(" ");
    out.push('\n');
    print!("{out}");
}

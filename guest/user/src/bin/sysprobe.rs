//! `sysprobe`: hands the kernel's message-passing and I/O system calls bad
//! user pointers (kernel addresses, null, unmapped pages, read-only code,
//! ranges running off the user window or off the mapped heap) and checks
//! that each fails with EFAULT, leaves no half-sent message behind, and
//! that first-touched heap pages still work. Prints `sysprobe: ok N
//! checks`, or `sysprobe: FAIL ...` and exits 1 at the first surprise.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use lazarus_ulib::abi::layout::{PAGE_SIZE, USER_STACK_SIZE, USER_STACK_TOP};
use lazarus_ulib::abi::syscall::errno::{EFAULT, ETIMEDOUT};
use lazarus_ulib::abi::syscall::{
    IPC_FOREVER, SYS_IPC_RECV, SYS_IPC_REPLY_WAIT, SYS_IPC_SEND, SYS_IPC_SENDRECV, SYS_WRITE,
};
use lazarus_ulib::process::{getpid, sbrk};
use lazarus_ulib::syscall::syscall6;
use lazarus_ulib::{Args, entry, ipc, println};

entry!(main);

/// A kernel-half address (the kernel image).
const KERNEL: u64 = 0xffff_ffff_8010_0000;
/// Below the stack and far above any heap this program grows: unmapped.
const UNMAPPED: u64 = USER_STACK_TOP - USER_STACK_SIZE - 64 * PAGE_SIZE;

fn main(_args: Args) -> i32 {
    let mut n = 0;
    match run(&mut n) {
        Ok(()) => {
            println!("sysprobe: ok {n} checks");
            0
        }
        Err(why) => {
            println!("sysprobe: FAIL {why}");
            1
        }
    }
}

fn sys(nr: u64, a: [u64; 6]) -> i64 {
    // SAFETY: every pointer argument is either bad on purpose (the kernel
    // must refuse it without touching it) or points at memory this program
    // owns for the length given.
    unsafe { syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

fn efault(n: &mut u32, what: &str, r: i64) -> Result<(), String> {
    *n += 1;
    if r == -EFAULT {
        Ok(())
    } else {
        Err(format!("{what}: returned {r}, not -EFAULT"))
    }
}

/// The next message to us must be `want` (so nothing else was queued).
fn next_is(n: &mut u32, what: &str, want: &[u8]) -> Result<(), String> {
    *n += 1;
    let mut buf = [0u8; 64];
    let (src, len) = ipc::recv(&mut buf).map_err(|e| format!("{what}: recv: {e}"))?;
    if src != getpid() || &buf[..len] != want {
        return Err(format!("{what}: got {:?} from {src}", &buf[..len]));
    }
    Ok(())
}

fn run(n: &mut u32) -> Result<(), String> {
    let me = u64::from(getpid());
    let code = run as *const () as u64;
    let good = [7u8; 16];
    let g = good.as_ptr() as u64;

    // Sends from bad buffers: refused, and nothing is queued.
    for (what, va, len) in [
        ("send from the kernel", KERNEL, 16),
        ("send from null", 0, 16),
        ("send from an unmapped page", UNMAPPED, 16),
        ("send off the user window", USER_STACK_TOP - 8, 16),
    ] {
        efault(n, what, sys(SYS_IPC_SEND, [me, va, len, 0, 0, 0]))?;
    }
    ipc::send(me as u32, b"marker-1").map_err(|e| format!("send: {e}"))?;
    next_is(n, "after bad sends", b"marker-1")?;

    // Receives into bad buffers: refused before blocking, and the
    // message stays queued for a good one.
    ipc::send(me as u32, b"kept").map_err(|e| format!("send: {e}"))?;
    let mut src = 0u32;
    let s = &mut src as *mut u32 as u64;
    for (what, va, len, src_out) in [
        ("recv into the kernel", KERNEL, 16, s),
        ("recv into read-only code", code, 16, s),
        ("recv into an unmapped page", UNMAPPED, 16, s),
        ("recv with src into the kernel", g, 16, KERNEL),
        ("recv with src into code", g, 16, code),
    ] {
        efault(n, what, sys(SYS_IPC_RECV, [va, len, src_out, 0, 0, 0]))?;
    }
    next_is(n, "after bad receives", b"kept")?;

    // A send-and-receive with a bad receive buffer sends nothing.
    efault(
        n,
        "sendrecv into code",
        sys(SYS_IPC_SENDRECV, [me, g, 16, code, 16, 0]),
    )?;
    efault(
        n,
        "sendrecv from the kernel",
        sys(SYS_IPC_SENDRECV, [me, KERNEL, 16, g, 16, 0]),
    )?;
    ipc::send(me as u32, b"marker-2").map_err(|e| format!("send: {e}"))?;
    next_is(n, "after bad sendrecvs", b"marker-2")?;

    // Likewise a reply-and-wait; its reply from a bad buffer is refused
    // even to a client that is gone.
    for (what, a) in [
        ("reply_wait into code", [me, g, 16, code, 16, IPC_FOREVER]),
        ("reply_wait into the kernel", [me, g, 16, KERNEL, 16, 0]),
        (
            "reply_wait from the kernel",
            [me, KERNEL, 16, g, 16, IPC_FOREVER],
        ),
    ] {
        efault(n, what, sys(SYS_IPC_REPLY_WAIT, a))?;
    }
    ipc::send(me as u32, b"marker-3").map_err(|e| format!("send: {e}"))?;
    next_is(n, "after bad reply_waits", b"marker-3")?;
    // A deadline that has passed wins over a queued message, which stays.
    ipc::send(me as u32, b"marker-4").map_err(|e| format!("send: {e}"))?;
    *n += 1;
    let r = sys(SYS_IPC_REPLY_WAIT, [0, 0, 0, g, 16, 1]);
    if r != -ETIMEDOUT {
        return Err(format!(
            "reply_wait past its deadline: returned {r}, not -ETIMEDOUT"
        ));
    }
    // The reply, then the oldest message (that one), with the sender in
    // the high half; the reply is queued behind it.
    *n += 1;
    let reply = *b"reply-5!";
    let mut got = [0u8; 16];
    let r = sys(
        SYS_IPC_REPLY_WAIT,
        [
            me,
            reply.as_ptr() as u64,
            8,
            got.as_mut_ptr() as u64,
            16,
            IPC_FOREVER,
        ],
    );
    if r != ((me as i64) << 32 | 8) || &got[..8] != b"marker-4" {
        return Err(format!(
            "reply_wait with a queued message: returned {r:#x}, {got:?}"
        ));
    }
    next_is(n, "after reply_wait", b"reply-5!")?;

    // Fresh heap: the first page is touched by nobody before the kernel
    // writes a message into it (mapped on demand), and a send running
    // off the end of the heap is refused.
    let heap = sbrk(2 * PAGE_SIZE as i64).map_err(|e| format!("sbrk: {e}"))?;
    let top = heap + 2 * PAGE_SIZE;
    ipc::send(me as u32, b"into fresh heap").map_err(|e| format!("send: {e}"))?;
    *n += 1;
    let r = sys(SYS_IPC_RECV, [heap, 64, s, 0, 0, 0]);
    // SAFETY: the kernel wrote `r` bytes at `heap`, which is ours.
    let got = unsafe { core::slice::from_raw_parts(heap as *const u8, r.max(0) as usize) };
    if r != 15 || got != b"into fresh heap" {
        return Err(format!("recv into fresh heap: {r}, {got:?}"));
    }
    efault(
        n,
        "send running off the heap",
        sys(SYS_IPC_SEND, [me, top - 8, 64, 0, 0, 0]),
    )?;
    // A sendrecv's own message can be its reply: no deadlock, no loss.
    *n += 1;
    let r = sys(SYS_IPC_SENDRECV, [me, g, 16, heap + PAGE_SIZE - 8, 16, 0]);
    if r != ((me as i64) << 32 | 16) {
        return Err(format!("sendrecv to self across a page boundary: {r}"));
    }

    // Plain writes from bad buffers.
    for (what, va) in [
        ("write from the kernel", KERNEL),
        ("write from unmapped", UNMAPPED),
    ] {
        efault(n, what, sys(SYS_WRITE, [1, va, 8, 0, 0, 0]))?;
    }
    Ok(())
}

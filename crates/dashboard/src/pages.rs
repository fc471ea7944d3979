//! The pages, as `maud` templates: every interpolated value is escaped.

use std::path::Path;

use lazarus_api::LATENCY_BUCKETS;
use lazarus_crashdb::{Bucket, BucketDetail};
use lazarus_diagnose::{GdbCommand, Report};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::format_utc;
use crate::vms::{VmView, latency_histogram};

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border-bottom:1px solid #ddd;\
padding:.2em .6em;text-align:left;vertical-align:top}code,pre{font-family:monospace}\
pre{background:#f4f4f4;padding:.5em;overflow-x:auto}.bar{background:#c33;height:.9em}\
.bad{color:#a00}.muted{color:#777}nav a{margin-right:1em}\
#gdb{white-space:pre-wrap;word-break:break-all}";

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · lazarus" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "Top crashers" } a href="/vms" { "Live VMs" } }
                h1 { (title) }
                (body)
            }
        }
    }
}

/// Daily counts as a row of bars (inline SVG, no script). Written by
/// hand: SVG children must be self-closed (`<rect/>`), which maud does
/// not write; every value in it is a number, the id escaped.
fn sparkline(counts: &[u64], id: &str) -> Markup {
    use std::fmt::Write as _;
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = (6u64, 24u64);
    let width = w * counts.len() as u64;
    let total: u64 = counts.iter().sum();
    let list = counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let id = html! { (id) }.into_string();
    let mut svg = format!(
        "<svg class=\"trend\" id=\"{id}\" data-counts=\"{list}\" width=\"{width}\" \
         height=\"{h}\" viewBox=\"0 0 {width} {h}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{total} crashes over {} days, per day: \
         {list}</title>",
        counts.len()
    );
    for (i, &c) in counts.iter().enumerate() {
        let bh = if c == 0 {
            1
        } else {
            (c * (h - 2) / max).max(2)
        };
        let fill = if c == 0 { "#ddd" } else { "#c33" };
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{fill}\"/>",
            i as u64 * w,
            h - bh,
            w - 1
        );
    }
    svg.push_str("</svg>");
    PreEscaped(svg)
}

/// One bucket on the front page.
pub struct TopRow {
    /// The bucket.
    pub bucket: Bucket,
    /// Crashes per day, oldest first.
    pub trend: Vec<u64>,
}

pub fn front_page(rows: &[TopRow], vms: &[VmView], db: &str) -> Markup {
    layout(
        "Top crashers",
        html! {
            p class="muted" { "Crash database: " code { (db) } }
            @if rows.is_empty() {
                p id="no-crashes" { "No crash is recorded." }
            } @else {
                table id="buckets" {
                    tr { th { "Signature" } th { "Count" } th { "Kind" } th { "Title" }
                         th { "First seen (UTC)" } th { "Last seen (UTC)" }
                         th { "Last " (crate::TREND_DAYS) " days" } }
                    @for r in rows {
                        @let b = &r.bucket;
                        tr class="bucket" data-signature=(b.signature) {
                            td { a class="sig" href={ "/signature/" (b.signature) } { code { (b.signature) } } }
                            td class="count" { (b.count) }
                            td { (b.kind) }
                            td { (b.title) }
                            td { (format_utc(b.first_seen_unix_ms)) }
                            td { (format_utc(b.last_seen_unix_ms)) }
                            td { (sparkline(&r.trend, &format!("trend-{}", b.signature))) }
                        }
                    }
                }
            }
            @if !vms.is_empty() {
                h2 { "Live VMs" }
                (vm_list(vms))
            }
        },
    )
}

pub fn vms_page(vms: &[VmView]) -> Markup {
    layout(
        "Live VMs",
        html! {
            @if vms.is_empty() {
                p { "No VM is watched: give the dashboard their API sockets with --vm-sock." }
            } @else {
                (vm_list(vms))
            }
        },
    )
}

fn bucket_label(i: usize) -> String {
    let us = |s: f64| {
        let us = s * 1e6;
        if us >= 1000.0 {
            format!("{} ms", us / 1000.0)
        } else {
            format!("{us} µs")
        }
    };
    match (
        i.checked_sub(1).map(|j| LATENCY_BUCKETS[j]),
        LATENCY_BUCKETS.get(i),
    ) {
        (None, Some(&hi)) => format!("≤ {}", us(hi)),
        (Some(_), Some(&hi)) => format!("≤ {}", us(hi)),
        (Some(lo), None) => format!("> {}", us(lo)),
        (None, None) => String::new(),
    }
}

fn vm_list(vms: &[VmView]) -> Markup {
    html! {
        @for v in vms {
            section class="vm" data-sock=(v.sock.display()) {
                h3 { "VM at " code { (v.sock.display()) } }
                @match &v.state {
                    Err(e) => {
                        p class="vm-unreachable bad" { "Unreachable: " (e) }
                    }
                    Ok(vm) => {
                        @let s = &vm.status;
                        table class="vm-status" {
                            tr { th { "State" } td class="vm-state" { (format!("{:?}", s.state).to_lowercase()) } }
                            tr { th { "Uptime" } td { (s.uptime_ms / 1000) " s" } }
                            tr { th { "Boots" } td { (s.boots) } }
                            tr { th { "vCPUs, memory" } td { (s.vcpus) ", " (s.memory_mib) " MiB" } }
                            tr { th { "On crash" } td { (s.on_crash) } }
                            tr { th { "Recoveries" } td class="vm-recoveries" { (s.recoveries) } }
                            tr { th { "Fallbacks to reboot" } td { (s.fallbacks) } }
                        }
                        @if let Some(m) = &vm.metrics {
                            @let l = &m.recoveries.latency_us;
                            p { "Recovery latency over the last " (l.samples) " recoveries: median "
                                (opt_us(l.median)) ", p99 " (opt_us(l.p99)) ", max " (opt_us(l.max)) "." }
                        }
                        @if let Some(list) = &vm.recoveries {
                            @let lat: Vec<u64> = list.recoveries.iter().map(|r| r.latency_us).collect();
                            @let hist = latency_histogram(&lat);
                            @let max = hist.iter().copied().max().unwrap_or(0).max(1);
                            h4 { "Recovery latency (" (lat.len()) " recoveries)" }
                            table class="histogram" {
                                @for (i, &c) in hist.iter().enumerate() {
                                    tr { td { (bucket_label(i)) } td class="n" { (c) }
                                         td { div class="bar" style={ "width:" (c * 200 / max) "px" } {} } }
                                }
                            }
                            @if !list.recoveries.is_empty() {
                                h4 { "Recent recoveries" }
                                table class="recoveries" {
                                    tr { th { "When (UTC)" } th { "Kind" } th { "Extension" }
                                         th { "Process" } th { "Latency" } }
                                    @for r in list.recoveries.iter().rev().take(20) {
                                        tr { td { (format_utc(r.time_unix_ms)) } td { (r.kind) }
                                             td { (r.extension.as_deref().unwrap_or("-")) }
                                             td { (r.quarantined_name.as_deref().unwrap_or("-")) }
                                             td { (r.latency_us) " µs" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn opt_us(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v} µs"))
}

/// What a signature page shows.
pub struct SignatureView<'a> {
    pub detail: &'a BucketDetail,
    pub daily: Vec<u64>,
    /// The example report and its crash's id.
    pub report: Option<(i64, &'a Report)>,
    /// The gdb command for the newest dump on disk, or why it cannot be
    /// built; `None` without any dump on disk.
    pub gdb: Option<Result<GdbCommand, String>>,
    pub dump_link: &'a dyn Fn(&Path) -> Option<String>,
}

pub fn signature_page(v: &SignatureView<'_>) -> Markup {
    let b = &v.detail.bucket;
    layout(
        &format!("Signature {}", b.signature),
        html! {
            p id="title" { (b.title) }
            p { (b.count) @if b.count == 1 { " crash" } @else { " crashes" } " of kind " (b.kind) ", first " (format_utc(b.first_seen_unix_ms))
                ", last " (format_utc(b.last_seen_unix_ms)) " (UTC)." }
            @if !b.extensions.is_empty() {
                p { "Extensions: " (b.extensions.join(", ")) }
            }
            h2 { "Occurrences" }
            p { "Per day over the last " (v.daily.len()) " days: " (sparkline(&v.daily, "history")) }
            table id="occurrences" {
                tr { th { "#" } th { "When (UTC)" } th { "Boot" } th { "Action" } th { "Process" }
                     th { "Extension" } th { "Dump" } }
                @for c in &v.detail.crashes {
                    tr { td { (c.id) } td { (format_utc(c.time_unix_ms)) } td { code { (c.boot_id) } }
                         td { (c.action) @if let Some(f) = &c.fallback { " (" (f) ")" } }
                         td { (c.process.as_deref().unwrap_or("-")) }
                         td { (c.extension.as_deref().unwrap_or("-")) }
                         td {
                             @match (&c.dump_path, c.dump_exists) {
                                 (Some(p), true) => {
                                     @if let Some(href) = (v.dump_link)(p) {
                                         a class="dump" href=(href) { "download" }
                                     } @else { code { (p.display()) } }
                                 }
                                 (Some(_), false) => span class="muted pruned" {
                                     @if c.dump_pruned { "pruned" } @else { "missing" } }
                                 (None, _) => span class="muted" { "none" }
                             }
                         }
                    }
                }
            }
            h2 { "Debug it" }
            @match &v.gdb {
                Some(Ok(g)) => {
                    pre id="gdb" { (g.command) }
                    @for w in &g.warnings { p class="muted" { "Note: " (w) } }
                }
                Some(Err(e)) => p class="bad" { "The newest dump cannot be opened: " (e) }
                None => p { "No dump of this signature is left on disk (they were pruned); the reports stay." }
            }
            h2 { "Example report" }
            @match v.report {
                None => p { "No stored report of this signature can be read." }
                Some((id, r)) => (report(id, r)),
            }
        },
    )
}

fn report(id: i64, r: &Report) -> Markup {
    let regs = r
        .registers
        .as_ref()
        .and_then(|regs| serde_json::to_value(regs).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    html! {
        p { "Crash #" (id) ": " strong { (r.title) } }
        table id="summary" {
            tr { th { "Kind" } td { (r.kind) } }
            tr { th { "Detected by" } td { (r.detector) } }
            tr { th { "Message" } td { (r.message) } }
            @if let Some(e) = &r.exception { tr { th { "Exception" } td { (e) } } }
            @if let Some(a) = r.fault_address { tr { th { "Fault address" } td { code { (format!("{a:#x}")) } } } }
            tr { th { "vCPU" } td { (r.crashed_vcpu) @if r.in_irq { " (in interrupt context)" } } }
            tr { th { "Process" } td id="process" { (process(r.process.as_ref())) } }
            @if let Some(p) = &r.interrupted_process { tr { th { "Interrupted process" } td { (process(Some(p))) } } }
            tr { th { "Extension" } td id="extension" {
                @match &r.extension {
                    Some(e) => { (e.name) " (slot " (e.slot) ")"
                        @if let Some(b) = e.base { " at " code { (format!("{b:#x}")) } } }
                    None => "-",
                }
            } }
        }
        h3 { "Faulting instruction" }
        @match &r.faulting_instruction {
            Some(i) => pre id="disassembly" { (format!("{:#x}", i.address)) "  " (i.bytes) "  " (i.disassembly)
                @if let Some(s) = &i.symbol { "    <" (s) ">" } }
            None => p class="muted" { "Not in the dump." }
        }
        h3 { "Backtrace" }
        ol id="backtrace" start="0" {
            @for f in &r.backtrace { li { code { (f.display()) } } }
        }
        h3 { "Registers" }
        @if regs.is_empty() { p class="muted" { "None recorded." } } @else {
            table id="registers" {
                @for (name, value) in &regs {
                    tr { th { (name) } td { code { (value.as_u64().map_or_else(|| value.to_string(), |v| format!("{v:#018x}"))) } } }
                }
            }
        }
        h3 { "Locks held" }
        @if r.locks_held.is_empty() { p id="locks" class="muted" { "None." } } @else {
            ul id="locks" {
                @for l in &r.locks_held {
                    li { (l.name) " (lock " (l.id) ", owner pid " (l.owner) ")"
                         @if let Some(e) = &l.extension { ", extension " (e) } }
                }
            }
        }
        @if let Some(w) = &r.spinning_on {
            p { "Spinning on " (w.lock.name) ", held by pid " (w.owner_pid) " "
                (w.owner_name.as_deref().unwrap_or("")) }
        }
        @if !r.notes.is_empty() {
            h3 { "Notes" }
            ul { @for n in &r.notes { li { (n) } } }
        }
    }
}

fn process(p: Option<&lazarus_diagnose::ProcessInfo>) -> String {
    match p {
        None => "-".into(),
        Some(p) => {
            let mut s = format!("pid {} \"{}\" ({})", p.pid, p.name, p.state);
            if let Some(nr) = p.syscall {
                s.push_str(&format!(", in system call {nr}"));
            }
            s
        }
    }
}

pub fn error_page(status: u16, title: &str, message: &str) -> Markup {
    layout(
        &format!("{status} {title}"),
        html! { p id="error" { (message) } p { a href="/" { "Back to the top crashers" } } },
    )
}

//! `/proc` readings (Linux): CPU time and resident memory of a process.

use std::time::Instant;

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB; `pid` may be `self`.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU ticks of the server and of this process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnap {
    pub server: Option<u64>,
    pub own: Option<u64>,
    pub at: Instant,
}

impl CpuSnap {
    pub fn take(server_pid: Option<u32>) -> CpuSnap {
        CpuSnap {
            server: server_pid.and_then(|p| cpu_ticks(&p.to_string())),
            own: cpu_ticks("self"),
            at: Instant::now(),
        }
    }
}

/// Milliseconds of CPU between two tick readings.
pub fn cpu_ms(before: Option<u64>, after: Option<u64>, tck: u64) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 * 1000.0 / tck as f64)
}

//! What `/proc` says about a process: its open descriptors, its memory, and
//! this process's open-file limit (which a router started from a test
//! inherits). Linux only, like the tests that read it.

/// Open descriptors (sockets and pipes among them) and resident memory of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Every open descriptor (`/proc/PID/fd`).
    pub fds: usize,
    /// Of those, sockets.
    pub sockets: usize,
    /// Of those, pipe ends (the splice pools hold some).
    pub pipes: usize,
    /// Resident memory (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident memory since start (`VmHWM`).
    pub hwm_kib: u64,
}

impl Usage {
    /// Descriptors other than pipes.
    pub fn non_pipes(&self) -> usize {
        self.fds - self.pipes
    }
}

/// The descriptors and memory of process `pid` now; zeros for what cannot be read.
pub fn usage(pid: u32) -> Usage {
    let mut u = Usage::default();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            u.fds += 1;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            if target.starts_with("socket:") {
                u.sockets += 1;
            } else if target.starts_with("pipe:") {
                u.pipes += 1;
            }
        }
    }
    u.rss_kib = status_kib(pid, "VmRSS");
    u.hwm_kib = status_kib(pid, "VmHWM");
    u
}

/// CPU time process `pid` has used, all threads, user and system
/// (`/proc/PID/stat` fields 14 and 15, in clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    std::time::Duration::from_millis((fields[11] + fields[12]) * 10)
}

/// How many descriptors process `pid` holds (0 if it is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A `kB` field of `/proc/PID/status`, e.g. `VmRSS`; 0 if it cannot be read.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// (soft, hard) `RLIMIT_NOFILE` of process `pid`, from `/proc/PID/limits`
/// ("unlimited" is `u64::MAX`).
pub fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no Max open files in /proc/{pid}/limits"));
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut value = || match fields.next() {
        Some("unlimited") => u64::MAX,
        Some(n) => n.parse().unwrap_or_else(|_| panic!("malformed: {line}")),
        None => panic!("malformed: {line}"),
    };
    (value(), value())
}

/// (soft, hard) `RLIMIT_NOFILE` of this process.
pub fn nofile() -> (u64, u64) {
    nofile_of(std::process::id())
}

/// Raise this process's soft `RLIMIT_NOFILE` to at least `need` (up to the
/// hard limit); processes started afterwards inherit it.
pub fn ensure_nofile(need: u64) {
    let (soft, hard) = nofile();
    if soft >= need {
        return;
    }
    assert!(
        hard >= need,
        "RLIMIT_NOFILE hard limit {hard} is below the {need} this test needs"
    );
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft open-file limit");
    assert!(nofile().0 >= need, "the open-file limit is still {:?}", nofile());
}

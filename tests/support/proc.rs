//! Reading the kernel's counters from /proc.

pub use kb::kib_field;

/// The examples' one `kB`-line parser, copied from examples/memory_meter.rs
/// (tests/copies_match.rs holds the copy to it). `name` ends with its colon.
mod kb {
    // SHARED: kib_field (canonical: examples/memory_meter.rs)
    /// The value of a `Name:   123 kB` line, in bytes; `None` without the unit.
    pub fn kib_field(text: &str, name: &str) -> Option<u64> {
        let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value.checked_mul(1024)?)
    }
    // SHARED_END: kib_field
}

/// `key` from /proc/self/status, in bytes (e.g. `VmData`).
pub fn self_status(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    kib_field(&text, &format!("{key}:")).unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
}

/// `key` from /proc/meminfo, in bytes (e.g. `Committed_AS`).
pub fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    kib_field(&text, &format!("{key}:")).unwrap_or_else(|| panic!("no {key} in /proc/meminfo"))
}

/// The mappings (VMAs) of this process that overlap `range`, as
/// `(start, end, permissions)` from /proc/self/maps.
pub fn mappings_in(range: std::ops::Range<usize>) -> Vec<(usize, usize, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (start, end) = words.next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            let perms = words.next()?.to_owned();
            (start < range.end && end > range.start).then_some((start, end, perms))
        })
        .collect()
}

/// What `range` looks like to a program: its pages' permissions, as runs of
/// equal permissions clipped to `range`. Unlike `mappings_in`, this does not
/// depend on where the kernel chose to split or merge its VMAs (a mapping
/// whose pages were never touched may merge with a neighbour after a move).
pub fn protections_in(range: std::ops::Range<usize>) -> Vec<(usize, usize, String)> {
    let mut runs: Vec<(usize, usize, String)> = Vec::new();
    for (start, end, perms) in mappings_in(range.clone()) {
        let (start, end) = (start.max(range.start), end.min(range.end));
        match runs.last_mut() {
            Some(last) if last.1 == start && last.2 == perms => last.1 = end,
            _ => runs.push((start, end, perms)),
        }
    }
    runs
}

/// The running kernel's (major, minor) version, from `uname -r`'s text.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-']);
    let major = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a major version");
    let minor = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a minor version");
    (major, minor)
}

/// vm.overcommit_memory: 0 (heuristic), 1 (always) or 2 (strict).
pub fn overcommit_mode() -> u32 {
    let text = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").expect("overcommit");
    text.trim().parse().expect("a number")
}

//! cgroup_oom: the OOM killer inside a memory cgroup made for the case.

use super::*;

/// No LISA counterpart: the kernel selftest `test_memcg_oom_events`
/// (tools/testing/selftests/cgroup/test_memcontrol.c), for either cgroup
/// version. A child that touches 64 MiB in a 32 MiB memory cgroup is
/// killed by the OOM killer inside that cgroup (SIGKILL), and the
/// cgroup's `oom_kill` counter goes from 0 to 1. It is what would happen
/// to a guest that ignored the balloon.
pub(super) fn cgroup_oom() -> CaseResult {
    let guard = match vm::create("dynamic-memory-oom", 32 * MIB)? {
        Ok(guard) => guard,
        Err(vm::NoCgroup(why)) => return Ok(Verdict::Skipped(why)),
    };
    let kills_before = guard.oom_kills()?;
    let procs = guard.procs();
    let report = run_bounded(data_limit(256 * MIB, None), BOUND, move |_| {
        vm::join(&procs)?;
        let len = 64 << 20;
        let mut map = memmap2::MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(io("mmap"))?;
        let page = pressure::page_size().map_err(io("page size"))?;
        for offset in (0..len).step_by(page) {
            map[offset] = 1; // one of these faults is the one the OOM killer ends
        }
        Err("touched 64 MiB in a 32 MiB cgroup and was not killed".into())
    })
    .map_err(io("fork"))?;
    let kills = guard.oom_kills()?;
    let peak = guard.cgroup.peak().ok().and_then(|r| r.value);
    let sigkill = Outcome::Killed {
        signal: libc::SIGKILL,
    };
    ensure(report.outcome == sigkill, || {
        format!("the child {} ({})", report.outcome, report.output.trim())
    })?;
    ensure(kills == kills_before + 1, || {
        format!(
            "oom_kill went {kills_before} -> {kills} in {}",
            guard.oom_file()
        )
    })?;
    Ok(Verdict::Passed(format!(
        "cgroup {} ({}), limit 32 MiB: the child was {}; oom_kill {kills_before} -> \
         {kills} ({}); cgroup peak {}; child peak RSS {}; the cgroup is removed on drop",
        guard.name,
        guard.version(),
        report.outcome,
        guard.oom_file(),
        peak.map_or("unavailable".into(), mib),
        mib(report.peak_rss)
    )))
}

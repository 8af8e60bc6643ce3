//! upper_limit and hot_add: one child, bounded by RLIMIT_DATA alone.

use super::*;

/// LISA `verify_dynamic_memory_upper_limit`: under stress, assigned
/// memory reaches the configured maximum (within 128 MB). Here: under a
/// 64 MiB RLIMIT_DATA allowance, `memory.grow` stops with -1 less than
/// one 64 KiB step below the cap, and every byte written before is
/// intact. Run for `Remap` (mremap growth is charged) and `Reserved`
/// (the PROT_NONE reservation is free; each mprotect commit is charged).
pub(super) fn upper_limit() -> CaseResult {
    let mut detail = Vec::new();
    let strategies = [("Remap", false), ("Reserved", true)];
    for (name, strategy) in strategies {
        let report = run_bounded(data_limit(64 * MIB, None), BOUND, move |link| {
            let pattern = Pattern::new();
            let mut memory = new_memory(strategy)?;
            let pages = grow_until_refused(memory.as_mut(), &pattern)?;
            let line = format!("pages={pages} headroom={}", headroom()?);
            link.say(&line)
        })
        .map_err(io("fork"))?;
        expect_exit_0(name, &report)?;
        let line = report.output.trim();
        let (pages, room) = (field(line, "pages")?, field(line, "headroom")?);
        let size = pages * STEP;
        ensure(room < STEP, || {
            format!(
                "{name}: refused with {} KiB still free under the cap",
                room / KIB
            )
        })?;
        // The rest of the 64 MiB went to the child's heap and stack.
        ensure(size >= 60 * MIB, || {
            format!("{name}: only {} by the cap", mib(size))
        })?;
        detail.push(format!(
            "{name}: grew to {pages} pages ({}) under a 64 MiB allowance; -1 with {} KiB \
             left (< one 64 KiB step); every byte intact; child peak RSS {}",
            mib(size),
            room / KIB,
            mib(report.peak_rss)
        ));
    }
    Ok(Verdict::Passed(detail.join("\n")))
}

/// LISA `verify_dynamic_memory_hot_add`: stress makes the host add
/// memory. Here the host (this parent) raises the child's soft limit
/// from 32 to 64 MiB at run time, within the hard limit; the grow that
/// was refused now succeeds, and the data is intact.
pub(super) fn hot_add() -> CaseResult {
    let limit = data_limit(32 * MIB, Some(64 * MIB));
    let (mut host, mut guest) = talk::channel().map_err(io("pipe"))?;
    let host_fds = host.fds();
    let child = rlimit_child::spawn(limit, BOUND, move |_| {
        Ends::close_in_child(host_fds);
        let pattern = Pattern::new();
        let mut memory = new_memory(false)?;
        let first = grow_until_refused(memory.as_mut(), &pattern)?;
        guest.say(&format!("pages={first} headroom={}", headroom()?))?;
        guest.hear(BOUND)?; // the host added memory
        let old = memory.grow(1);
        ensure(old == first as i32, || {
            format!("the grow after the hot add returned {old}")
        })?;
        let offset = u64::from(first) * STEP;
        memory
            .write(offset, pattern.page(first))
            .map_err(|e| e.to_string())?;
        let second = grow_until_refused(memory.as_mut(), &pattern)?;
        guest.say(&format!("pages={second} headroom={}", headroom()?))
    })
    .map_err(io("fork"))?;

    let line = host.hear(STEP_TIMEOUT)?;
    let (first, room1) = (field(&line, "pages")?, field(&line, "headroom")?);
    let pid = child.pid();
    let old = rlimit_child::get_limit(pid, Resource::Data).map_err(io("prlimit"))?;
    let raised = libc::rlimit {
        rlim_cur: old.rlim_max,
        rlim_max: old.rlim_max,
    };
    rlimit_child::set_limit(pid, Resource::Data, &raised).map_err(io("raise the soft limit"))?;
    // Past the hard limit needs CAP_SYS_RESOURCE.
    let past = libc::rlimit {
        rlim_cur: old.rlim_max + MIB,
        rlim_max: old.rlim_max + MIB,
    };
    let hard = match rlimit_child::set_limit(pid, Resource::Data, &past) {
        Ok(()) => "raising the hard limit too was allowed (CAP_SYS_RESOURCE)".to_string(),
        Err(e) => format!("raising the hard limit was refused: {e}"),
    };
    host.say("added")?;
    let line = host.hear(STEP_TIMEOUT)?;
    let (second, room2) = (field(&line, "pages")?, field(&line, "headroom")?);
    let report = child.wait().map_err(io("wait"))?;
    expect_exit_0("hot_add", &report)?;

    ensure(room1 < STEP && room2 < STEP, || {
        format!(
            "refused with {} and {} KiB still free",
            room1 / KIB,
            room2 / KIB
        )
    })?;
    let added = (second - first) * STEP;
    ensure(values_close(added, 32 * MIB, 3), || {
        format!(
            "grew {} after the hot add, not 32 MiB within 3%",
            mib(added)
        )
    })?;
    Ok(Verdict::Passed(format!(
        "refused at {} ({} KiB left); host raised the soft limit by 32 MiB; the refused \
         grow succeeded and growth went on to {} ({} KiB left): +{} (32 MiB within 3%); \
         every byte intact; {hard}",
        mib(first * STEP),
        room1 / KIB,
        mib(second * STEP),
        room2 / KIB,
        mib(added)
    )))
}

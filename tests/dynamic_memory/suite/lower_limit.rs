//! lower_limit: memory given back with MADV_DONTNEED, checked with mincore.

use super::*;

/// LISA `verify_dynamic_memory_lower_limit`: under host pressure,
/// assigned memory falls to the configured minimum. Here: of a 64 MiB
/// memory, 48 MiB are no longer in use; MADV_DONTNEED on them drops RSS
/// by 48 MiB (within 3%), and the live 16 MiB are untouched: every page
/// resident (mincore, exact) and every byte intact.
///
/// The child reports its progress as it grows; the parent waits at most
/// `STEP_TIMEOUT` for each report, so a loaded machine slows the case
/// without failing it, and a stuck child still ends it.
pub(super) fn lower_limit() -> CaseResult {
    let (mut host, mut child_side) = talk::channel().map_err(io("pipe"))?;
    let host_fds = host.fds();
    let child = rlimit_child::spawn(data_limit(128 * MIB, None), BOUND, move |_| {
        Ends::close_in_child(host_fds);
        let pattern = Pattern::new();
        let mut memory = new_memory(false)?;
        for part in 0..8 {
            grow_filled_from(memory.as_mut(), &pattern, part * 128, 128)?;
            child_side.say(&format!("grown={}", (part + 1) * 128))?;
        }
        let live = 16 << 20;
        let rss = || memory_meter::rss(None).map(|r| r.value);
        let before = rss()?;
        pressure::release(&mut memory.as_mut_slice()[live..]).map_err(io("MADV_DONTNEED"))?;
        let after = rss()?;
        let page = pressure::page_size().map_err(io("page size"))?;
        let resident = |r: &[u8]| memory_meter::resident_pages(r, page).map_err(io("mincore"));
        let live_resident = resident(&memory.as_slice()[..live])?;
        let idle_resident = resident(&memory.as_slice()[live..])?;
        child_side.say("measured")?;
        for p in 0..256 {
            let bytes = memory
                .slice(u64::from(p) * STEP, WASM_PAGE)
                .map_err(|e| e.to_string())?;
            ensure(bytes == pattern.page(p), || {
                format!("live page {p} changed")
            })?;
        }
        let zero = memory.as_slice()[live..].iter().all(|&b| b == 0);
        child_side.say(&format!(
            "before={before} after={after} live={live_resident} idle={idle_resident} \
             pages={} zero={}",
            live / page,
            u8::from(zero)
        ))
    })
    .map_err(io("fork"))?;
    let line = loop {
        let line = host.hear(STEP_TIMEOUT)?;
        if line.starts_with("before=") {
            break line;
        }
    };
    let report = child.wait().map_err(io("wait"))?;
    expect_exit_0("lower_limit", &report)?;
    let fall = field(&line, "before")?.saturating_sub(field(&line, "after")?);
    let (live, idle, pages) = (
        field(&line, "live")?,
        field(&line, "idle")?,
        field(&line, "pages")?,
    );
    ensure(values_close(fall, 48 * MIB, 3), || {
        format!("RSS fell {}, not 48 MiB within 3%", mib(fall))
    })?;
    ensure(live == pages && idle == 0, || {
        format!("resident: live {live} of {pages} pages, released {idle} (want all, 0)")
    })?;
    ensure(field(&line, "zero")? == 1, || {
        "released pages did not read back as zero".into()
    })?;
    Ok(Verdict::Passed(format!(
        "RSS {} -> {} (-48 MiB within 3%); live 16 MiB: {live} of {pages} pages resident, \
         bytes intact; released 48 MiB: 0 pages resident, reads as zero",
        mib(field(&line, "before")?),
        mib(field(&line, "after")?)
    )))
}

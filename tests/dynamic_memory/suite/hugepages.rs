//! hugepages_hot_add and hugepages_balloon_down: transparent huge pages.

use super::*;

/// The THP mode (`always`, `madvise` or `never`), or why there is none.
fn thp_mode() -> Result<String, String> {
    let path = "/sys/kernel/mm/transparent_hugepage/enabled";
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .map(str::to_owned)
        .ok_or_else(|| format!("{path}: no [mode] in {text:?}"))
}

/// In a child: map 8 MiB of 2 MiB-aligned memory with MADV_HUGEPAGE,
/// touch it, and report AnonHugePages (smaps_rollup) before and after,
/// then after MADV_DONTNEED, with RSS around the release.
fn huge_pages_in_child() -> Result<(String, u64), String> {
    let mode = match thp_mode() {
        Ok(mode) if mode == "never" => return Err("THP is `never` on this host".into()),
        Ok(mode) => mode,
        Err(why) => return Err(format!("no transparent huge pages: {why}")),
    };
    let path = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";
    let huge: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(2 * MIB);
    let report = run_bounded(data_limit(64 * MIB, None), BOUND, move |link| {
        let len = (4 * huge) as usize;
        let mut map = memmap2::MmapOptions::new()
            .len(len + huge as usize)
            .map_anon()
            .map_err(io("mmap"))?;
        let skip = map.as_ptr().align_offset(huge as usize);
        let region = &mut map[skip..skip + len];
        // SAFETY: a range of our own private mapping; advice only.
        let rc = unsafe { libc::madvise(region.as_mut_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        ensure(rc == 0, || {
            format!("MADV_HUGEPAGE: {}", std::io::Error::last_os_error())
        })?;
        let ahp = || memory_meter::anon_huge_pages(None).map(|r| r.value);
        let rss = || memory_meter::rss(None).map(|r| r.value);
        let before = ahp()?;
        let method = pressure::choose(None)?;
        let page = pressure::page_size().map_err(io("page size"))?;
        pressure::touch(region, method, page).map_err(io("touch"))?;
        let (touched, rss_touched) = (ahp()?, rss()?);
        pressure::release(region).map_err(io("MADV_DONTNEED"))?;
        let (released, rss_released) = (ahp()?, rss()?);
        link.say(&format!(
            "before={before} touched={touched} released={released} rss_touched={rss_touched} \
             rss_released={rss_released} len={len}"
        ))
    })
    .map_err(io("fork"))?;
    expect_exit_0("huge pages", &report)?;
    Ok((format!("{} mode={mode}", report.output.trim()), huge))
}

/// LISA `verify_dynamic_memory_hot_add_hugepages`: AnonHugePages rises
/// under huge page stress. Here: at least one huge page, at most the
/// 8 MiB region, after touching a MADV_HUGEPAGE region.
pub(super) fn hugepages_hot_add() -> CaseResult {
    let (line, huge) = match huge_pages_in_child() {
        Ok(found) => found,
        Err(why) if is_thp_skip(&why) => return Ok(Verdict::Skipped(why)),
        Err(why) => return Err(why),
    };
    let rise = field(&line, "touched")?.saturating_sub(field(&line, "before")?);
    let len = field(&line, "len")?;
    ensure(rise >= huge && rise <= len, || {
        format!(
            "AnonHugePages rose {}, want {}..={}",
            mib(rise),
            mib(huge),
            mib(len)
        )
    })?;
    Ok(Verdict::Passed(format!(
        "AnonHugePages +{} after touching an {} MADV_HUGEPAGE region ({} huge pages of {}; \
         LISA asks only for a rise); THP {}",
        mib(rise),
        mib(len),
        rise / huge,
        mib(huge),
        line.rsplit("mode=").next().unwrap_or("?")
    )))
}

/// LISA `verify_dynamic_memory_balloon_down_hugepages`, turned around
/// for one process: releasing the huge-page region gives every huge
/// page back (AnonHugePages to where it was, exactly) and drops RSS by
/// the region (within 3%).
pub(super) fn hugepages_balloon_down() -> CaseResult {
    let (line, _) = match huge_pages_in_child() {
        Ok(found) => found,
        Err(why) if is_thp_skip(&why) => return Ok(Verdict::Skipped(why)),
        Err(why) => return Err(why),
    };
    let (before, released) = (field(&line, "before")?, field(&line, "released")?);
    let fall = field(&line, "rss_touched")?.saturating_sub(field(&line, "rss_released")?);
    let len = field(&line, "len")?;
    ensure(released == before, || {
        format!(
            "AnonHugePages {} after the release, {} before",
            mib(released),
            mib(before)
        )
    })?;
    ensure(values_close(fall, len, 3), || {
        format!("RSS fell {}, not {} within 3%", mib(fall), mib(len))
    })?;
    Ok(Verdict::Passed(format!(
        "MADV_DONTNEED on the {} huge-page region: AnonHugePages back to {} (exact), \
         RSS -{} (within 3%)",
        mib(len),
        mib(before),
        mib(fall)
    )))
}

fn is_thp_skip(why: &str) -> bool {
    why.starts_with("THP is `never`") || why.starts_with("no transparent huge pages")
}

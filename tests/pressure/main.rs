//! `examples/pressure.rs`, tested: the budget keeps its margin free and
//! refuses what it cannot check, `/proc/meminfo` is read in bytes, and the
//! `madvise` probe tells known advice from unknown. The test the chapter
//! shows, `taken_pages_are_resident_and_released_pages_are_not`, lives in
//! the example and runs here too.

#[cfg(target_os = "linux")]
#[path = "../../examples/pressure.rs"]
#[allow(dead_code)]
mod pressure;

#[cfg(target_os = "linux")]
mod linux {
    use super::pressure::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_budget_keeps_a_margin_free() {
        let info = || {
            Ok(MemInfo {
                total: 16 * GIB,
                available: 4 * GIB,
            })
        };
        // 10% of 16 GiB = 1.6 GiB margin: 2.4 GiB may be taken.
        let note = check_budget(2 * GIB, info(), false).unwrap();
        assert!(note.contains("so up to 2457 MiB may be taken"), "{note}");
        let refused = check_budget(3 * GIB, info(), false).unwrap_err();
        assert!(refused.contains("refusing to take 3072 MiB"), "{refused}");
        let forced = check_budget(3 * GIB, info(), true).unwrap();
        assert!(forced.contains("anyway (--force)"), "{forced}");
        // A small machine keeps at least 256 MiB free.
        assert_eq!(safety_margin(GIB), 256 << 20);
        let small = MemInfo {
            total: GIB,
            available: 200 << 20,
        };
        assert!(
            check_budget(1 << 20, Ok(small), false).is_err(),
            "all below the margin"
        );
    }

    #[test]
    fn an_unreadable_meminfo_is_refused_unless_forced() {
        let unreadable = check_budget(1, Err("no /proc".into()), false).unwrap_err();
        assert!(unreadable.contains("no /proc"), "{unreadable}");
        assert!(unreadable.contains("pass --force"), "{unreadable}");
        assert!(check_budget(1, Err("no /proc".into()), true).is_ok());
    }

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24683652 kB\nMemFree: 1 kB\nMemAvailable:   24233204 kB\n";
        let info = parse_meminfo(text).unwrap();
        assert_eq!(info.total, 24683652 * 1024);
        assert_eq!(info.available, 24233204 * 1024);
        let missing = parse_meminfo("MemTotal: 1 kB\n").unwrap_err();
        assert!(missing.contains("MemAvailable"), "{missing}");
        let huge = format!("MemTotal: {} kB\nMemAvailable: 1 kB\n", u64::MAX);
        assert!(parse_meminfo(&huge).is_err(), "overflow is no value");
    }

    #[test]
    fn the_probe_tells_known_advice_from_unknown() {
        assert!(advice_supported(libc::MADV_DONTNEED));
        assert!(!advice_supported(12345), "no such advice");
    }

    #[test]
    fn write_is_always_available_and_auto_picks_what_the_kernel_has() {
        assert_eq!(choose(Touch::Write), Ok(Method::Write));
        let populate = advice_supported(libc::MADV_POPULATE_WRITE);
        let auto = if populate {
            Method::Populate
        } else {
            Method::Write
        };
        assert_eq!(choose(Touch::Auto), Ok(auto));
        assert_eq!(choose(Touch::Populate).is_ok(), populate);
    }

    #[test]
    fn rss_is_read_from_smaps_rollup() {
        let (bytes, source) = rss().unwrap();
        assert!(bytes > 0);
        assert_eq!(source, "/proc/self/smaps_rollup");
    }
}

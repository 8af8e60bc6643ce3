extern crate libc;
extern crate memmap2;

// The lines above are for `mdbook test`, which passes no `--extern` flags.
//
// pressure: a memory pressure generator. It takes N MiB in steps of S MiB,
// makes every page resident (MADV_POPULATE_WRITE where the kernel has it, a
// write per page otherwise), reports RSS after each step, holds the memory,
// then gives it back with MADV_DONTNEED. It refuses to take more than
// MemAvailable minus a safety margin unless told `--force`.
//
//   Run:          cargo run --example pressure
//                 cargo run --example pressure -- --mib 256 --step-mib 32 --hold-ms 500
//   Tested by:    cargo test --example pressure
//   Explained in: src/part2-creating-pressure.md, "Creating pressure"
//   Used by:      tests/dynamic_memory.rs, as the balloon
//
// madvise advice, /proc/meminfo and smaps_rollup are Linux interfaces, so
// everything but the argument parser is Linux only.

use std::process::ExitCode;

const MIB: usize = 1 << 20;

const USAGE: &str = "usage: pressure [--mib N] [--step-mib S] [--hold-ms T] [--touch populate|write] [--force]
  --mib N          MiB to take in all (default 16)
  --step-mib S     MiB per step, at most N (default 4)
  --hold-ms T      how long to hold the memory before releasing it (default 0)
  --touch HOW      populate: MADV_POPULATE_WRITE (default where supported); write: one write per page
  --force          take N MiB even if that leaves less than the safety margin free";

/// How to make pages resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// `MADV_POPULATE_WRITE` if the kernel has it (5.14+), else writes.
    Auto,
    Populate,
    Write,
}

#[derive(Debug, PartialEq, Eq)]
struct Args {
    mib: usize,
    step_mib: usize,
    hold_ms: u64,
    touch: Touch,
    force: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        mib: 16,
        step_mib: 4,
        hold_ms: 0,
        touch: Touch::Auto,
        force: false,
    };
    let mut step_given = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        if flag == "--force" {
            parsed.force = true;
            continue;
        }
        let value = match flag {
            "--mib" | "--step-mib" | "--hold-ms" | "--touch" => {
                it.next().ok_or_else(|| format!("`{flag}` needs a value"))?
            }
            other => return Err(format!("unknown argument `{other}`")),
        };
        if flag == "--touch" {
            parsed.touch = match value.as_str() {
                "populate" => Touch::Populate,
                "write" => Touch::Write,
                other => return Err(format!("`--touch` takes populate or write, got `{other}`")),
            };
            continue;
        }
        let number: u64 = value
            .parse()
            .map_err(|_| format!("`{flag}` takes a whole number, got `{value}`"))?;
        match flag {
            "--hold-ms" => parsed.hold_ms = number,
            _ if number == 0 => return Err(format!("`{flag}` must be at least 1")),
            // The largest request whose byte count still fits a usize.
            _ if number > (usize::MAX / MIB) as u64 => {
                return Err(format!(
                    "`{flag}` {number} MiB does not fit this address space"
                ))
            }
            "--mib" => parsed.mib = number as usize,
            _ => {
                parsed.step_mib = number as usize;
                step_given = true;
            }
        }
    }
    if !step_given {
        parsed.step_mib = parsed.step_mib.min(parsed.mib);
    }
    if parsed.step_mib > parsed.mib {
        return Err(format!(
            "`--step-mib` {} is larger than `--mib` {}",
            parsed.step_mib, parsed.mib
        ));
    }
    Ok(parsed)
}

#[cfg(target_os = "linux")]
pub use generator::*;

#[cfg(target_os = "linux")]
mod generator {
    use super::{Touch, MIB};
    use memmap2::{MmapMut, MmapOptions};
    use std::io;
    use std::time::{Duration, Instant};

    // ANCHOR: budget
    /// The two `/proc/meminfo` numbers the budget needs, in bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MemInfo {
        pub total: u64,
        pub available: u64,
    }

    pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .ok_or_else(|| format!("/proc/meminfo has no {name} line"))
        };
        Ok(MemInfo {
            total: field("MemTotal:")?,
            available: field("MemAvailable:")?,
        })
    }

    pub fn meminfo() -> Result<MemInfo, String> {
        let text =
            std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
        parse_meminfo(&text)
    }

    /// What must stay free: a tenth of RAM, and never less than 256 MiB.
    pub fn safety_margin(total: u64) -> u64 {
        (total / 10).max(256 * MIB as u64)
    }

    /// Whether taking `bytes` is allowed. `Ok` carries a note for the log,
    /// `Err` the reason for refusing.
    pub fn check_budget(
        bytes: u64,
        info: Result<MemInfo, String>,
        force: bool,
    ) -> Result<String, String> {
        let info = match info {
            Ok(info) => info,
            Err(why) if force => return Ok(format!("cannot read MemAvailable ({why}); --force")),
            Err(why) => {
                return Err(format!(
                    "cannot read MemAvailable ({why}), so cannot check the request; pass --force to take it anyway"
                ))
            }
        };
        let margin = safety_margin(info.total);
        let allowed = info.available.saturating_sub(margin);
        let note = format!(
            "MemAvailable {:.1} GiB, safety margin {:.1} GiB, so up to {} MiB may be taken",
            gib(info.available),
            gib(margin),
            allowed / MIB as u64
        );
        if bytes <= allowed {
            Ok(note)
        } else if force {
            Ok(format!(
                "{note}; taking {} MiB anyway (--force)",
                bytes / MIB as u64
            ))
        } else {
            Err(format!(
                "refusing to take {} MiB: {note}; pass --force to take it anyway",
                bytes / MIB as u64
            ))
        }
    }

    fn gib(bytes: u64) -> f64 {
        bytes as f64 / (1u64 << 30) as f64
    }
    // ANCHOR_END: budget

    // ANCHOR: probe
    /// Whether the kernel knows `advice`. `madvise` checks the advice before
    /// it looks at the range, and an empty range then succeeds at once, so
    /// `madvise(NULL, 0, advice)` is 0 for a known advice and `EINVAL` for an
    /// unknown one (`madvise_should_skip` in the kernel's mm/madvise.c).
    pub fn advice_supported(advice: libc::c_int) -> bool {
        // SAFETY: an empty range: the kernel touches no memory.
        unsafe { libc::madvise(std::ptr::null_mut(), 0, advice) == 0 }
    }

    /// How pages are made resident, once the probe has decided.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Method {
        Populate,
        Write,
    }

    pub fn choose(touch: Touch) -> Result<Method, String> {
        let populate = advice_supported(libc::MADV_POPULATE_WRITE);
        match touch {
            Touch::Auto if populate => Ok(Method::Populate),
            Touch::Auto | Touch::Write => Ok(Method::Write),
            Touch::Populate if populate => Ok(Method::Populate),
            Touch::Populate => Err("this kernel has no MADV_POPULATE_WRITE (Linux 5.14+)".into()),
        }
    }
    // ANCHOR_END: probe

    // ANCHOR: touch
    /// Makes every page of `region` resident and dirty.
    ///
    /// `MADV_POPULATE_WRITE` faults the pages in from inside the kernel, in
    /// one call, and reports a fault it cannot serve as an error instead of
    /// a signal. A write per page does the same work one fault at a time.
    /// Neither stops the OOM killer: where it runs first (a memory cgroup at
    /// its limit), the process is killed either way.
    pub fn touch(region: &mut [u8], method: Method, page: usize) -> io::Result<()> {
        match method {
            Method::Populate => {
                let advice = libc::MADV_POPULATE_WRITE;
                // SAFETY: `region` is a page-aligned, writable range we own;
                // populating does not change its contents.
                let rc = unsafe { libc::madvise(region.as_mut_ptr().cast(), region.len(), advice) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Method::Write => {
                for offset in (0..region.len()).step_by(page) {
                    region[offset] = 1;
                }
            }
        }
        Ok(())
    }
    // ANCHOR_END: touch

    // ANCHOR: release
    /// Gives the frames of `region` back to the kernel but keeps the range:
    /// RSS falls at once, and the pages read back as zero.
    pub fn release(region: &mut [u8]) -> io::Result<()> {
        // SAFETY: a private anonymous range we own. We hold it mutably, so
        // nothing observes the contents becoming zero.
        let rc = unsafe {
            libc::madvise(
                region.as_mut_ptr().cast(),
                region.len(),
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    // ANCHOR_END: release

    /// This process's RSS in bytes, and the file it came from.
    pub fn rss() -> Result<(u64, &'static str), String> {
        let kib = |path: &'static str, field: &str| -> Result<(u64, &'static str), String> {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| (kib * 1024, path))
                .ok_or_else(|| format!("{path}: no {field}"))
        };
        kib("/proc/self/smaps_rollup", "Rss:").or_else(|first| {
            kib("/proc/self/status", "VmRSS:").map_err(|second| format!("{first}; {second}"))
        })
    }

    pub fn page_size() -> io::Result<usize> {
        // SAFETY: sysconf only reads a configuration value.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(size as usize)
    }

    // ANCHOR: generator
    /// Memory taken in steps, one mapping per step, so each step is one
    /// allocation that can fail on its own.
    pub struct Generator {
        steps: Vec<MmapMut>,
        method: Method,
        page: usize,
    }

    impl Generator {
        pub fn new(method: Method) -> io::Result<Generator> {
            Ok(Generator {
                steps: Vec::new(),
                method,
                page: page_size()?,
            })
        }

        pub fn method(&self) -> Method {
            self.method
        }

        /// Bytes held now.
        pub fn held(&self) -> usize {
            self.steps.iter().map(|m| m.len()).sum()
        }

        /// Maps `bytes` more and makes them resident, calling `progress`
        /// with the bytes done so far after each chunk.
        pub fn take(
            &mut self,
            bytes: usize,
            progress: &mut dyn FnMut(usize),
        ) -> io::Result<Duration> {
            let started = Instant::now();
            let mut region = MmapOptions::new().len(bytes).map_anon()?;
            // Chunks of 4 MiB: a page multiple, so each chunk stays aligned.
            let chunk = (4 * MIB).max(self.page);
            let mut done = 0;
            for part in region.chunks_mut(chunk) {
                touch(part, self.method, self.page)?;
                done += part.len();
                progress(done);
            }
            self.steps.push(region);
            Ok(started.elapsed())
        }

        /// Releases every step with `MADV_DONTNEED`, keeping the mappings.
        pub fn release_all(&mut self) -> io::Result<Duration> {
            let started = Instant::now();
            for region in &mut self.steps {
                release(region)?;
            }
            Ok(started.elapsed())
        }

        /// The mappings, one per step.
        pub fn regions(&self) -> &[MmapMut] {
            &self.steps
        }

        /// How many of the pages held are resident, by `mincore`.
        pub fn resident_pages(&self) -> io::Result<usize> {
            let mut resident = 0;
            let mut status = [0u8; 4096];
            for region in &self.steps {
                for part in region.chunks(status.len() * self.page) {
                    let pages = part.len().div_ceil(self.page);
                    // SAFETY: `part` is page-aligned and mapped; `status`
                    // has a byte for each of its `pages` pages.
                    let rc = unsafe {
                        libc::mincore(part.as_ptr() as *mut _, part.len(), status.as_mut_ptr())
                    };
                    if rc != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    resident += status[..pages].iter().filter(|&&s| s & 1 == 1).count();
                }
            }
            Ok(resident)
        }
    }
    // ANCHOR_END: generator
}

// ANCHOR: main
#[cfg(target_os = "linux")]
fn run(args: &Args) -> Result<(), (u8, String)> {
    // A refusal comes before anything is mapped: exit code 2, like a bad
    // argument. A failure while taking memory: exit code 1.
    let refused = check_budget((args.mib * MIB) as u64, meminfo(), args.force);
    let note = refused.map_err(|why| (2, why))?;
    let method = choose(args.touch).map_err(|why| (2, why))?;
    take_hold_release(args, method, &note).map_err(|why| (1, why))
}

#[cfg(target_os = "linux")]
fn take_hold_release(args: &Args, method: Method, note: &str) -> Result<(), String> {
    use std::io::{IsTerminal, Write};
    let mib = |bytes: u64| bytes as f64 / MIB as f64;
    let total = args.mib * MIB;
    let mut generator = Generator::new(method).map_err(|e| format!("page size: {e}"))?;
    let how = match method {
        Method::Populate => "MADV_POPULATE_WRITE",
        Method::Write => "one write per page",
    };
    println!(
        "pressure: take {} MiB in steps of {} MiB ({how}), hold {} ms, release with MADV_DONTNEED",
        args.mib, args.step_mib, args.hold_ms
    );
    println!("{note}");
    let (rss_before, source) = rss()?;
    println!("{:<8} {:>10} {:>12} {:>10}", "step", "held", "RSS", "time");
    println!("{:<8} {:>6} MiB {:>8.1} MiB", "before", 0, mib(rss_before));

    // A progress line on a terminal only; a pipe or a log gets the steps.
    let tty = std::io::stderr().is_terminal();
    let steps = total.div_ceil(args.step_mib * MIB);
    for step in 1..=steps {
        let held = generator.held();
        let bytes = (args.step_mib * MIB).min(total - held);
        let mut progress = |done: usize| {
            if tty {
                let now = held + done;
                let bar = "#".repeat(now * 20 / total) + &" ".repeat(20 - now * 20 / total);
                eprint!("\r[{bar}] {} / {} MiB", now / MIB, args.mib);
                let _ = std::io::stderr().flush();
            }
        };
        let took = generator
            .take(bytes, &mut progress)
            .map_err(|e| format!("step {step}: taking {} MiB: {e}", bytes / MIB))?;
        if tty {
            eprint!("\r\x1b[2K");
        }
        let (now, _) = rss()?;
        println!(
            "{:<8} {:>6} MiB {:>8.1} MiB {:>7.1} ms",
            format!("{step}/{steps}"),
            generator.held() / MIB,
            mib(now),
            took.as_secs_f64() * 1e3
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(args.hold_ms));
    let (held_rss, _) = rss()?;
    let took = generator
        .release_all()
        .map_err(|e| format!("MADV_DONTNEED: {e}"))?;
    let (after, _) = rss()?;
    println!(
        "released {} MiB: RSS {:.1} MiB ({:+.1} MiB) in {:.1} ms",
        generator.held() / MIB,
        mib(after),
        mib(after) - mib(held_rss),
        took.as_secs_f64() * 1e3
    );
    println!("RSS from {source}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("pressure: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    #[cfg(target_os = "linux")]
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, why)) => {
            eprintln!("pressure: {why}");
            ExitCode::from(code)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (args, MIB);
        println!("pressure: MADV_POPULATE_WRITE and /proc/meminfo are Linux only");
        ExitCode::SUCCESS
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_arguments_take_16_mib_in_4_mib_steps() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.mib, args.step_mib, args.hold_ms), (16, 4, 0));
        assert_eq!(args.touch, Touch::Auto);
        assert!(!args.force);
    }

    #[test]
    fn zero_and_non_numbers_are_rejected_and_named() {
        for (args, needle) in [
            (&["--mib", "0"][..], "`--mib` must be at least 1"),
            (
                &["--mib", "lots"],
                "`--mib` takes a whole number, got `lots`",
            ),
            (&["--mib", "-5"], "`--mib` takes a whole number, got `-5`"),
            (&["--step-mib", "0"], "`--step-mib` must be at least 1"),
            (&["--mib", "8", "--step-mib", "16"], "larger than `--mib` 8"),
            (&["--hold-ms"], "`--hold-ms` needs a value"),
            (&["--touch", "gently"], "populate or write"),
            (&["--mib", "99999999999999999"], "does not fit"),
            (&["--mb", "8"], "unknown argument `--mb`"),
        ] {
            let err = parse(args).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_small_mib_shrinks_the_default_step() {
        assert_eq!(parse(&["--mib", "2"]).unwrap().step_mib, 2);
        let args = parse(&[
            "--mib",
            "256",
            "--step-mib",
            "32",
            "--hold-ms",
            "500",
            "--force",
        ]);
        let args = args.unwrap();
        assert_eq!(
            (args.mib, args.step_mib, args.hold_ms, args.force),
            (256, 32, 500, true)
        );
    }

    #[cfg(target_os = "linux")]
    mod linux {
        use super::super::*;

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
            assert!(check_budget(2 * GIB, info(), false).is_ok());
            let refused = check_budget(3 * GIB, info(), false).unwrap_err();
            assert!(refused.contains("refusing to take 3072 MiB"), "{refused}");
            assert!(check_budget(3 * GIB, info(), true).is_ok(), "--force");
            // A small machine keeps at least 256 MiB free.
            assert_eq!(safety_margin(GIB), 256 << 20);
            let unreadable = check_budget(1, Err("no /proc".into()), false).unwrap_err();
            assert!(unreadable.contains("pass --force"), "{unreadable}");
        }

        #[test]
        fn meminfo_is_parsed_in_bytes() {
            let text = "MemTotal:       24683652 kB\nMemFree: 1 kB\nMemAvailable:   24233204 kB\n";
            let info = parse_meminfo(text).unwrap();
            assert_eq!(info.total, 24683652 * 1024);
            assert_eq!(info.available, 24233204 * 1024);
            assert!(parse_meminfo("MemTotal: 1 kB\n")
                .unwrap_err()
                .contains("MemAvailable"));
        }

        #[test]
        fn the_probe_tells_known_advice_from_unknown() {
            assert!(advice_supported(libc::MADV_DONTNEED));
            assert!(!advice_supported(12345), "no such advice");
        }

        // ANCHOR: test_take_release
        /// Every page taken is resident (mincore, exact), whichever way it was
        /// touched; after release none is, and the memory reads back as zero.
        #[test]
        fn taken_pages_are_resident_and_released_pages_are_not() {
            let mut methods = vec![Method::Write];
            if advice_supported(libc::MADV_POPULATE_WRITE) {
                methods.push(Method::Populate);
            }
            for method in methods {
                let mut generator = Generator::new(method).unwrap();
                let page = page_size().unwrap();
                generator.take(8 * MIB, &mut |_| {}).unwrap();
                generator.take(4 * MIB, &mut |_| {}).unwrap();
                assert_eq!(generator.held(), 12 * MIB);
                assert_eq!(
                    generator.resident_pages().unwrap(),
                    12 * MIB / page,
                    "{method:?}"
                );
                generator.release_all().unwrap();
                assert_eq!(generator.resident_pages().unwrap(), 0, "{method:?}");
                assert_eq!(generator.held(), 12 * MIB, "the ranges stay mapped");
                let zero = generator
                    .regions()
                    .iter()
                    .all(|r| r.iter().all(|&b| b == 0));
                assert!(zero, "{method:?}: released pages read back as zero");
            }
        }
        // ANCHOR_END: test_take_release
    }
}

//! Which path each memory's grows take on the running kernel, as one JSON
//! line per memory, for `cargo xtask kernels` to tabulate across kernels:
//! grow page by page to 4096 pages (Copy: 256), touching the last byte after
//! each grow. Every grow must succeed; the paths are what differs.

#[path = "../examples/linear_memory.rs"]
#[allow(dead_code)]
mod linear_memory;
#[path = "../examples/remap_memory.rs"]
#[allow(dead_code)]
mod remap_memory;

use std::collections::BTreeMap;

fn main() {
    let mut failed = false;
    for (name, pages, run) in memories() {
        match run() {
            Ok(paths) => {
                let line = serde_json::json!({ "strategy": name, "pages": pages, "paths": paths });
                println!("{line}");
            }
            Err(e) => {
                eprintln!("grow_paths: {name}: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}

type Run = Box<dyn Fn() -> Result<BTreeMap<String, u32>, String>>;

fn memories() -> Vec<(&'static str, u32, Run)> {
    let reserved = |reservation: Option<u32>, pages: u32| -> Run {
        Box::new(move || {
            let mut m = linear_memory::LinearMemory::new(1, None, reservation)
                .map_err(|e| format!("{e:?}"))?;
            let paths =
                linear_memory::grow_page_by_page(&mut m, pages).map_err(|e| format!("{e:?}"))?;
            Ok(paths
                .into_iter()
                .map(|(p, n)| (format!("{p:?}"), n))
                .collect())
        })
    };
    let exact = |growth: remap_memory::Growth, pages: u32| -> Run {
        Box::new(move || {
            let mut m =
                remap_memory::RemapMemory::new(1, None, growth).map_err(|e| format!("{e:?}"))?;
            let mut paths = BTreeMap::new();
            while m.size() < pages {
                let (_, path) = m.grow_traced(1).map_err(|e| format!("{e:?}"))?;
                *paths.entry(format!("{path:?}")).or_insert(0) += 1;
                let last = m.byte_len() - 1;
                m.as_mut_slice()[last] = 1;
            }
            Ok(paths)
        })
    };
    vec![
        ("Reserved, 4 GiB reservation", 4096, reserved(None, 4096)),
        (
            "Reserved, 16-page reservation",
            4096,
            reserved(Some(16), 4096),
        ),
        ("Remap", 4096, exact(remap_memory::Growth::Remap, 4096)),
        ("Copy", 256, exact(remap_memory::Growth::Copy, 256)),
    ]
}

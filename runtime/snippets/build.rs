//! Turns the Rust blocks of the chapters whose snippets need wasmtime
//! (`RUNTIME_CHAPTERS` in the root build.rs) into skeptic tests of this
//! package, which has wasmtime, expanding them with the root build script's
//! own code: the book package checks them (includes, anchors, block rules)
//! but does not compile them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[path = "../../build.rs"]
#[allow(dead_code)]
mod book;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("runtime/snippets/ is in the workspace");
    let src_dir = root.join("src");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("book");
    println!("cargo::rerun-if-changed=../../build.rs");
    println!("cargo::rerun-if-changed=../../xtask/src/programs.rs");
    println!("cargo::rerun-if-changed=../../src");
    println!("cargo::rerun-if-changed=../examples");
    println!("cargo::rerun-if-changed=../../examples");
    println!("cargo::rerun-if-changed=../../benches/results");
    let (mut errors, mut used) = (Vec::new(), BTreeSet::new());
    let mut paths = Vec::new();
    let mut programs = BTreeSet::new();
    let copies = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    for chapter in book::RUNTIME_CHAPTERS {
        let expanded = book::expand_chapter(&src_dir, Path::new(chapter), &mut errors, &mut used);
        let dest = out_dir.join(chapter);
        std::fs::create_dir_all(&out_dir).expect("OUT_DIR is writable");
        if std::fs::read_to_string(&dest).ok().as_deref() != Some(expanded.as_str()) {
            std::fs::write(&dest, &expanded).expect("OUT_DIR is writable");
        }
        // Each program once (see xtask/src/programs.rs).
        paths.push(book::skeptic_copy(
            &copies,
            Path::new(chapter),
            &expanded,
            &mut programs,
        ));
    }
    if !errors.is_empty() {
        for e in &errors {
            println!("cargo::error={e}");
        }
        std::process::exit(1);
    }
    skeptic::generate_doc_tests(&paths);
}

//! Generates the Rust code for every `.proto` under `trellis/` and writes the file descriptor
//! set that the gateway (transcoding) and the gRPC servers (reflection) load at run time.
//! protoc comes from `protoc-bin-vendored`, so the build needs nothing installed.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let include = protoc_bin_vendored::include_path().expect("vendored protoc includes");

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let mut files = Vec::new();
    collect(&root.join("trellis"), &mut files);
    println!("cargo:rerun-if-changed=trellis");
    println!("cargo:rerun-if-changed=google");

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("out dir"));
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // `prost::Name` for every message: events are packed into `google.protobuf.Any` by type URL.
    config.enable_type_names();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("trellis_descriptor.bin"))
        .include_file("_includes.rs")
        .compile_with_config(config, &files, &[root.clone(), include])
        .expect("compiling protos");
}

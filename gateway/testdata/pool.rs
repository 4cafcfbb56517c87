//! The descriptor pools the gateway's tests run against: the contract plus a test-only file under
//! `testdata/` (`trellis/widgets/v1/widgets.proto` by default), compiled with the vendored protoc.

use std::path::Path;
use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

/// The contract and the test-only `trellis.widgets.v1` package.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| compile("trellis/widgets/v1/widgets.proto"))
}

/// The contract plus one file under `testdata/`.
pub fn compile(file: &str) -> DescriptorPool {
    // The gateway crate, or its `fuzz/` crate, which reuses this file.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = if manifest.ends_with("fuzz") { manifest.parent().unwrap_or(manifest) } else { manifest };
    let out =
        std::env::temp_dir().join(format!("trellis-gateway-{}-{}.bin", file.replace('/', "_"), std::process::id()));
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let include = protoc_bin_vendored::include_path().expect("vendored protoc includes");
    let status = std::process::Command::new(protoc)
        .arg("--include_imports")
        .arg("--include_source_info")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("-I{}", manifest.join("testdata").display()))
        .arg(format!("-I{}", manifest.join("../proto").display()))
        .arg(format!("-I{}", include.display()))
        .arg(file)
        .status()
        .expect("running protoc");
    assert!(status.success(), "protoc failed on {file}");
    let bytes = std::fs::read(&out).expect("reading the descriptor set");
    let _ = std::fs::remove_file(&out);
    let mut pool = trellis_kit::descriptors::pool().clone();
    pool.decode_file_descriptor_set(bytes.as_slice()).expect("test descriptors");
    pool
}

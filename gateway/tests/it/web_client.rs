//! A real third-party gRPC-web client against the gateway: Connect for the web
//! (`@connectrpc/connect-web`, grpc-web transport over `fetch`) in Node, with code generated from
//! the protos by `@bufbuild/protoc-gen-es`. Versions are pinned in `tests/web/package-lock.json`;
//! `npm ci` runs when `node_modules` is missing (it needs the npm registry once).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Harness, KID};

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web")
}

/// Installs the pinned packages (once) and generates `gen/` from the protos.
fn prepare() -> PathBuf {
    let dir = web_dir();
    if !dir.join("node_modules/@connectrpc/connect-web").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node.js 18+ is needed for this test)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let include = protoc_bin_vendored::include_path().expect("vendored includes");
    std::fs::create_dir_all(dir.join("gen")).expect("gen/");
    let status = Command::new(protoc)
        .arg(format!("--plugin=protoc-gen-es={}", dir.join("node_modules/.bin/protoc-gen-es").display()))
        .arg("--es_out=gen")
        .arg("--es_opt=target=js+dts,import_extension=js")
        .arg(format!("-I{}", manifest.join("testdata").display()))
        .arg(format!("-I{}", manifest.join("../proto").display()))
        .arg(format!("-I{}", include.display()))
        .args([
            "trellis/identity/v1/token.proto",
            "trellis/widgets/v1/widgets.proto",
            "trellis/common/v1/options.proto",
            "trellis/common/v1/types.proto",
            "google/api/annotations.proto",
            "google/api/http.proto",
        ])
        .current_dir(&dir)
        .status()
        .expect("protoc with protoc-gen-es");
    assert!(status.success(), "code generation failed");
    dir
}

#[tokio::test]
async fn a_connect_grpc_web_client_calls_unary_and_streaming_methods() {
    let dir = tokio::task::spawn_blocking(prepare).await.expect("prepare");
    let h = Harness::start().await;
    let token = h.token();
    let base = h.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node").arg("client.mjs").arg(base).arg(token).current_dir(dir).output().expect("node")
    })
    .await
    .expect("node client");
    assert!(output.status.success(), "node failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).expect("the client's JSON");
    assert_eq!(out["kids"], json!([KID]), "{out}");
    assert_eq!(out["widget"], json!({"id": "w1", "status": "IN_REVIEW", "weight": "9007199254740993"}), "{out}");
    // Connect's codes: not_found = 5, unauthenticated = 16.
    assert_eq!(out["missing"]["code"], 5, "{out}");
    assert_eq!(out["missing"]["message"], "No such widget");
    assert_eq!(out["anonymous"]["code"], 16, "{out}");
    assert_eq!(out["streamed"], json!(["w0", "w1", "w2"]), "{out}");
    assert!(out["json_codec"].is_object(), "grpc-web+json is refused: {out}");
}

//! The Trellis contracts.
//!
//! Every `.proto` under `proto/trellis/` is compiled by `build.rs`; the generated modules mirror
//! the proto packages (`trellis::tasks::v1`, `trellis::common::v1`, ...). [`FILE_DESCRIPTOR_SET`]
//! holds the encoded descriptors of every file, with their options (`google.api.http`,
//! `trellis.common.v1.*`), for server reflection and for the gateway's generic transcoder.

#![allow(clippy::all, missing_debug_implementations)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

/// The encoded `google.protobuf.FileDescriptorSet` of every Trellis proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trellis_descriptor.bin"));

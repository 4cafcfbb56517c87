//! `cargo xtask dev | test | lint | bench`.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

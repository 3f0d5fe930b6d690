//! Project tasks: `cargo xtask <task>` (work in progress).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("no xtask tasks yet")
}

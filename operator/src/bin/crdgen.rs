//! Writes the CRDs generated from the Rust types into `crds/` (or the directory given).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("crds"));
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in herald_operator::crdgen::render()? {
        let path = dir.join(file);
        std::fs::write(&path, yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

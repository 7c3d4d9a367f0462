//! Writes the CRDs generated from the Rust types into `crds/` and `charts/herald/crds/`
//! (run from the workspace root), or into the one directory given.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = match std::env::args().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => herald_operator::crdgen::DIRS
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    let files = herald_operator::crdgen::render()?;
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (file, yaml) in &files {
            let path = dir.join(file);
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

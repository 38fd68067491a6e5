//! Stamps the build with its git commit (`ringway --version`, the startup line): the
//! `RINGWAY_COMMIT` environment variable when set (a Docker build context has no `.git`),
//! else `git rev-parse --short HEAD`, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    let commit = std::env::var("RINGWAY_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RINGWAY_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=RINGWAY_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild the stamp when HEAD moves: HEAD itself (a checkout) and the branch it names (a
    // commit). Both paths are asked of git, since worktrees keep them elsewhere.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watch.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

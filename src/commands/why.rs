//! `nixpack why PATH|NAME`: why a built image holds a store path — the
//! shortest reference chain from the result to it, one path a line, as
//! `nix why-depends` would show it. Read from `.nixpack/<image>/closure.json`
//! alone: no engine, no Nix on the host.

use crate::cli::WhyArgs;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::record;

/// Runs `nixpack why`; returns the text to print.
pub fn run(manifest: &Manifest, args: &WhyArgs) -> Result<String, Error> {
    let image = super::pick_image(manifest, args.image.as_ref())?;
    let closure = super::built_closure(manifest, image)?;
    let targets = record::find_paths(&closure, &args.target);
    if targets.is_empty() {
        let near = record::near_names(&closure, &args.target, 5);
        return Err(Error::msg(
            format!(
                "no store path of `{}` matches `{}`",
                image.reference(),
                args.target
            ),
            format!(
                "its {} store paths include, nearest first: {}",
                closure.paths.len(),
                near.join(", ")
            ),
        ));
    }
    let mut out = String::new();
    if targets.len() > 1 {
        out.push_str(&format!(
            "{} store paths match `{}`:\n\n",
            targets.len(),
            args.target
        ));
    }
    for (i, target) in targets.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match closure.shortest_chain(target) {
            Some(chain) => {
                for (j, p) in chain.iter().enumerate() {
                    if j == 0 {
                        out.push_str(&format!("{p}\n"));
                    } else {
                        out.push_str(&format!("→ {p}\n"));
                    }
                }
            }
            None => out.push_str(&format!(
                "{target}\n  (in the closure, but the result does not refer to it)\n"
            )),
        }
    }
    Ok(out)
}

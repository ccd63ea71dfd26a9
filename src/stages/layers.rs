//! Stage `layers`: one deterministic tarball per planned layer.
//!
//! Reads `closure.json` and `layers = N`; writes `layers/<file>.tar` in
//! `.nixpack/<image>/`. A layer file is named by the content key of its
//! store paths (see [`crate::layers`]), so only layers whose paths changed
//! are written; when none did, no container starts. The conventions layer
//! is written here in Rust. Files no longer in the plan are removed.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::builder::{append_bytes, BuilderImage};
use super::{source_date_epoch, Ctx};
use crate::closure::Closure;
use crate::conventions::Conventions;
use crate::engine::RunSpec;
use crate::error::Error;
use crate::layers::{self, Layer};
use crate::manifest::Image;

/// The planned layers, the conventions, and how many layers were written.
pub struct Layers {
    /// Closure layers, bottom first.
    pub plan: Vec<Layer>,
    /// The conventions layer (possibly empty).
    pub conventions: Conventions,
    /// Closure layers written this time (0 when all were cached).
    pub written: usize,
}

/// Makes sure every layer tarball of the plan is in `dir/layers`.
pub async fn run(
    ctx: &Ctx<'_>,
    builder: &BuilderImage,
    volume: &str,
    image: &Image,
    dir: &Path,
    closure: &Closure,
) -> Result<Layers, Error> {
    let layers_dir = dir.join("layers");
    let epoch = source_date_epoch();
    // Tarballs made with another mtime are other bytes: start over.
    let epoch_file = layers_dir.join(".mtime");
    if std::fs::read_to_string(&epoch_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        != Some(epoch)
    {
        let _ = std::fs::remove_dir_all(&layers_dir);
    }
    std::fs::create_dir_all(&layers_dir)
        .map_err(|e| Error::internal("creating the layers folder", e))?;
    crate::outputs::write_atomic(&epoch_file, epoch.to_string().as_bytes())
        .map_err(|e| Error::internal("writing layers/.mtime", e))?;

    let plan = layers::plan(closure, image.layers);
    let conventions = Conventions::new(closure, image.conventions);
    let missing: Vec<&Layer> = plan
        .iter()
        .filter(|l| !layers_dir.join(l.file_name()).is_file())
        .collect();

    if !missing.is_empty() {
        let name = image.name.to_string();
        let stage = ctx.ui.stage(
            &name,
            &format!("writing {} of {} layers", missing.len(), plan.len()),
        );
        let mut tsv = String::new();
        for l in &missing {
            for p in &l.paths {
                tsv.push_str(&format!("{}\t{}\n", l.file_name(), p));
            }
        }
        let mut upload = tar::Builder::new(Vec::new());
        append_bytes(
            &mut upload,
            "nixpack/plan/layers.tsv",
            tsv.as_bytes(),
            0o444,
        )
        .map_err(|e| Error::internal("packing the layer plan", e))?;
        let upload = upload
            .into_inner()
            .map_err(|e| Error::internal("packing the layer plan", e))?;
        let spec = RunSpec {
            image: &builder.id,
            cmd: vec!["layers".into()],
            entrypoint: None,
            env: vec![
                "NIXPACK_OUT=/nixpack/out".into(),
                "NIXPACK_LAYERS=/nixpack/plan/layers.tsv".into(),
                format!("SOURCE_DATE_EPOCH={epoch}"),
            ],
            volumes: vec![(volume.to_owned(), "/nix".into())],
            uploads: vec![upload],
            labels: HashMap::from([
                ("dev.nixpack.stage".to_owned(), "layers".to_owned()),
                ("dev.nixpack.image".to_owned(), image.name.to_string()),
            ]),
        };
        let mut tail = Vec::new();
        let code = ctx
            .engine
            .run_to_completion(
                &spec,
                |l| {
                    stage.message(l);
                    tail.push(l.to_owned());
                },
                Some(("/nixpack/out/layers", &layers_dir)),
            )
            .await
            .map_err(Error::user)?;
        if code != 0 {
            return Err(Error::msg(
                format!(
                    "writing layers for `{name}` failed (exit {code}):\n    {}",
                    tail.join("\n    ")
                ),
                "the builder needs GNU tar; check the entrypoint template if you override it",
            ));
        }
        if let Some(l) = missing
            .iter()
            .find(|l| !layers_dir.join(l.file_name()).is_file())
        {
            return Err(Error::internal(
                "writing layers",
                format!("the builder wrote no {}", l.file_name()),
            ));
        }
        stage.done("written");
    }

    if !conventions.is_empty() {
        let path = layers_dir.join(conventions.file_name());
        if !path.is_file() {
            let mut bytes = Vec::new();
            conventions
                .write_tar(&mut bytes, epoch)
                .map_err(|e| Error::internal("writing the conventions layer", e))?;
            crate::outputs::write_atomic(&path, &bytes)
                .map_err(|e| Error::internal("writing the conventions layer", e))?;
        }
    }

    // Keep the folder to what the plan uses.
    let keep: BTreeSet<String> = plan
        .iter()
        .map(Layer::file_name)
        .chain((!conventions.is_empty()).then(|| conventions.file_name()))
        .chain([".mtime".to_owned()])
        .collect();
    if let Ok(entries) = std::fs::read_dir(&layers_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.strip_suffix(".diffid").unwrap_or(&name);
            if !keep.contains(base) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(Layers {
        written: missing.len(),
        plan,
        conventions,
    })
}

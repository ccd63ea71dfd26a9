//! `nixpack inspect`: a built image as a person wants to read it — its
//! reference, digests, size, layers (what each holds, why, and which
//! changed since the image before), its largest store paths, what it runs
//! and where its SBOMs are. Read from `.nixpack/<image>/` alone
//! (`report.json`, `closure.json`, `layers.json`, `previous-layers.json`,
//! `image-config.json`): no engine needed. `--json` prints the same for
//! machines, with stable field names.

use std::path::Path;

use serde::Serialize;

use crate::cli::InspectArgs;
use crate::error::Error;
use crate::manifest::{Image, Manifest};
use crate::record::{self, LayerList, Reason};
use crate::stages::nix::human_bytes;

/// Everything `inspect` shows; `--json` prints it as it is.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// `NAME:TAG`.
    pub image: String,
    /// sha256 of `image-manifest.json` (none for an image the Engine's
    /// Dockerfile builder made).
    pub manifest_digest: Option<String>,
    /// sha256 of `image-config.json`.
    pub config_digest: Option<String>,
    /// Bytes, as the engine reported them at the build.
    pub size: u64,
    /// The result store path.
    pub result: String,
    /// Number of store paths.
    pub store_paths: usize,
    /// Bytes of all their NARs.
    pub nar_size: u64,
    /// ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    /// CMD.
    pub cmd: Option<Vec<String>>,
    /// Exposed ports (`8080/tcp`).
    pub ports: Vec<String>,
    /// The manifest digest of the image before, which `changed` compares
    /// against (none on a first build).
    pub previous_manifest_digest: Option<String>,
    /// Layers, bottom first.
    pub layers: Vec<InspectLayer>,
    /// The ten largest store paths, largest first.
    pub largest_paths: Vec<PathSize>,
    /// Where the SBOMs are, relative to the manifest's folder.
    pub sbom: Sboms,
}

/// One layer.
#[derive(Debug, Serialize)]
pub struct InspectLayer {
    /// Its tarball, relative to the image folder.
    pub file: String,
    /// sha256 of the tar.
    pub diff_id: Option<String>,
    /// Bytes of the tar.
    pub size: Option<u64>,
    /// Bytes of its store paths' NARs.
    pub nar_size: u64,
    /// Its store paths.
    pub paths: Vec<String>,
    /// Why these paths are together (`result`, `shared-base`, `own`,
    /// `grouped`, `conventions`).
    pub reason: Reason,
    /// New since the image before.
    pub changed: bool,
}

/// A store path and its NAR size.
#[derive(Debug, Serialize)]
pub struct PathSize {
    /// The store path.
    pub path: String,
    /// Bytes of its NAR.
    pub nar_size: u64,
}

/// The SBOM files.
#[derive(Debug, Serialize)]
pub struct Sboms {
    /// CycloneDX 1.5 JSON.
    pub cyclonedx: Option<String>,
    /// SPDX 2.3 JSON.
    pub spdx: Option<String>,
}

/// Runs `nixpack inspect`; returns the text (or JSON) to print.
pub fn run(manifest: &Manifest, args: &InspectArgs) -> Result<String, Error> {
    let image = super::pick_image(manifest, args.image.as_ref())?;
    let inspection = inspect(manifest, image)?;
    if args.json {
        let mut text = serde_json::to_string_pretty(&inspection)
            .map_err(|e| Error::internal("writing JSON", e))?;
        text.push('\n');
        Ok(text)
    } else {
        Ok(render(&inspection))
    }
}

/// Reads what the last build of `image` left.
pub fn inspect(manifest: &Manifest, image: &Image) -> Result<Inspection, Error> {
    let dir = crate::outputs::image_dir(manifest, image);
    let not_built = || {
        Error::msg(
            format!(
                "the image `{}` is not built yet (no {})",
                image.reference(),
                dir.join("report.json").display()
            ),
            "run `nixpack build` first",
        )
    };
    let report: serde_json::Value = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(not_built)?;
    let closure = super::built_closure(manifest, image)?;
    let read_list = |file: &str| -> Result<Option<LayerList>, Error> {
        match std::fs::read_to_string(dir.join(file)) {
            Ok(t) => LayerList::from_json(&t).map(Some).map_err(|e| {
                Error::msg(
                    format!("{}: {e}", dir.join(file).display()),
                    "run `nixpack build` again",
                )
            }),
            Err(_) => Ok(None),
        }
    };
    // Built before nixpack kept layers.json: the plan says the same, less
    // the DiffIDs.
    let layers = read_list(record::LAYERS_FILE)?.unwrap_or_else(|| {
        let plan = crate::layers::plan(&closure, image.layers);
        let conventions = crate::conventions::Conventions::new(&closure, image.conventions);
        LayerList::new(&closure, &plan, &conventions)
    });
    let previous = read_list(record::PREVIOUS_LAYERS_FILE)?;

    let config: Option<serde_json::Value> = std::fs::read(dir.join("image-config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
    };
    let (entrypoint, cmd, ports) = match config.as_ref().map(|c| &c["config"]) {
        Some(run) => (
            strings(&run["Entrypoint"]),
            strings(&run["Cmd"]),
            run["ExposedPorts"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        ),
        None => (
            image.entrypoint.clone(),
            image.cmd.clone(),
            image.ports.iter().map(ToString::to_string).collect(),
        ),
    };
    let text = |k: &str| report[k].as_str().map(str::to_owned);
    let relative = |file: &str| {
        let path = dir.join(file);
        path.is_file().then(|| {
            path.strip_prefix(&manifest.root)
                .unwrap_or(&path)
                .display()
                .to_string()
        })
    };
    Ok(Inspection {
        image: text("image").unwrap_or_else(|| image.reference()),
        manifest_digest: text("manifest_digest"),
        config_digest: text("config_digest"),
        size: report["size"].as_u64().unwrap_or(0),
        result: closure.result.to_string(),
        store_paths: closure.paths.len(),
        nar_size: closure.nar_size(),
        entrypoint,
        cmd,
        ports,
        previous_manifest_digest: previous.as_ref().and_then(|p| p.manifest_digest.clone()),
        layers: (0..layers.layers.len())
            .map(|i| {
                let l = &layers.layers[i];
                InspectLayer {
                    file: l.file.clone(),
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                    nar_size: l.nar_size,
                    paths: l.paths.iter().map(ToString::to_string).collect(),
                    reason: l.reason,
                    changed: previous.is_some() && layers.is_new(i, previous.as_ref()),
                }
            })
            .collect(),
        largest_paths: record::largest_paths(&closure, 10)
            .into_iter()
            .map(|(p, n)| PathSize {
                path: p.to_string(),
                nar_size: n,
            })
            .collect(),
        sbom: Sboms {
            cyclonedx: relative(crate::sbom::CYCLONEDX_FILE),
            spdx: relative(crate::sbom::SPDX_FILE),
        },
    })
}

/// The text a person reads.
pub fn render(i: &Inspection) -> String {
    let dash = || "-".to_owned();
    let list = |v: &Option<Vec<String>>| match v {
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
        None => dash(),
    };
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{k:<11}{v}\n"));
    field("image", i.image.clone());
    field("manifest", i.manifest_digest.clone().unwrap_or_else(dash));
    field("config", i.config_digest.clone().unwrap_or_else(dash));
    field(
        "size",
        format!(
            "{} in {} layers; {} store paths, {} of NAR",
            human_bytes(i.size),
            i.layers.len(),
            i.store_paths,
            human_bytes(i.nar_size)
        ),
    );
    field("result", i.result.clone());
    field("entrypoint", list(&i.entrypoint));
    field("cmd", list(&i.cmd));
    field(
        "ports",
        if i.ports.is_empty() {
            dash()
        } else {
            i.ports.join(", ")
        },
    );
    let sboms: Vec<&str> = [&i.sbom.cyclonedx, &i.sbom.spdx]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    field(
        "sboms",
        if sboms.is_empty() {
            dash()
        } else {
            sboms.join(", ")
        },
    );

    out.push_str(&match &i.previous_manifest_digest {
        Some(d) => format!("\nlayers, bottom first (changed: since the image before, {d})\n"),
        None => "\nlayers, bottom first (no image before to compare with)\n".to_owned(),
    });
    out.push_str(&format!(
        "  {:>3}  {:>10}  {:>5}  {:<7}  {}\n",
        "#", "SIZE", "PATHS", "CHANGED", "WHY"
    ));
    for (n, l) in i.layers.iter().enumerate() {
        let names: Vec<&str> = l
            .paths
            .iter()
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or(p)
            })
            .map(|base| base.split_once('-').map_or(base, |(_, name)| name))
            .collect();
        let shown = match names.len() {
            0 => "/tmp, /bin, /usr/local".to_owned(),
            1..=3 => names.join(", "),
            k => format!("{}, … ({k} paths)", names[..2].join(", ")),
        };
        out.push_str(&format!(
            "  {:>3}  {:>10}  {:>5}  {:<7}  {}: {shown}\n",
            n,
            human_bytes(l.size.unwrap_or(l.nar_size)),
            l.paths.len(),
            if l.changed { "changed" } else { "" },
            Reason::to_string(&l.reason),
        ));
    }
    out.push_str("\nlargest store paths\n");
    for p in &i.largest_paths {
        out.push_str(&format!("  {:>10}  {}\n", human_bytes(p.nar_size), p.path));
    }
    out
}

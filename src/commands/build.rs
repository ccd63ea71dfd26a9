//! `nixpack build`: every stage, for every selected image, `-j` at a time.
//!
//! The builder image and the store volume are shared and made once; then
//! each image runs nix → layers → image. Ctrl-C removes every container
//! nixpack started before exiting; a failed image never gets its tag.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::cli::{BuildArgs, Output};
use crate::engine::Engine;
use crate::error::Error;
use crate::lock::{self, Lock, LockedBuilder, LockedImage, LOCK_NAME};
use crate::manifest::{Image, Manifest, Runner};
use crate::render::Renderer;
use crate::stages::{self, runner::Backend, Ctx};
use crate::ui::Ui;

/// What one image's build produced, for the summary and the report.
pub struct Outcome {
    /// The tagged image.
    pub built: stages::image::Built,
    /// Store paths in the closure.
    pub store_paths: usize,
    /// Wall time per stage: nix, layers, image.
    pub times: [(&'static str, Duration); 3],
    /// The closure's result and hash, for the lock.
    pub result: String,
    /// sha256 of the canonical closure.
    pub closure_hash: String,
    /// Whether nix-build ran.
    pub nix_ran: bool,
    /// Closure layers written.
    pub layers_written: usize,
    /// What changed since the previous closure, as a few lines (empty
    /// on a first build or when the closure is the same).
    pub changes: Vec<String>,
}

/// Runs `nixpack build`.
pub fn run(manifest: Manifest, args: &BuildArgs, ui: Ui) -> Result<(), Error> {
    // Usage mistakes first: they need no engine.
    let images = select(&manifest, args)?;
    let o = &args.push_options;
    if !args.push && (o.insecure || o.username.is_some() || o.compression != Default::default()) {
        return Err(Error::msg(
            "--insecure, --username and --compression say how to push",
            "add --push to push the images once they are built",
        ));
    }
    // Read before the build: stdin is the password, not something to wait for later.
    let credentials = if args.push {
        super::push::credentials(o)?
    } else {
        None
    };
    let outputs = plan_outputs(&args.outputs, &images)?;
    // The engine is needed to run the builder, or to load the images.
    // With --push and no --output, the registry is where the images go
    // (as with `docker buildx build --push`): nothing is loaded into the
    // engine unless `--output docker` asks for it.
    let load = if args.outputs.is_empty() {
        !args.push
    } else {
        args.outputs.contains(&Output::Docker)
    };
    let host = match manifest.builder.runner {
        Runner::Docker => false,
        Runner::Host => true,
        Runner::Auto => nix_on_path(),
    };
    let runtime = super::runtime()?;
    let result = runtime.block_on(async {
        let mut signals = crate::ui::Interrupts::install()
            .ok_or_else(|| Error::internal("installing the Ctrl-C handler", "refused"))?;
        let engine = if host && !load {
            None
        } else {
            let engine = Engine::connect().await.map_err(Error::user)?;
            if ui.verbose() > 0 {
                ui.log(&format!("engine: {}", engine.endpoint));
            }
            Some(engine)
        };
        if ui.verbose() > 0 {
            ui.log(if host {
                "runner: this machine's Nix"
            } else {
                "runner: the builder container"
            });
        }
        let work = async {
            build(engine.as_ref(), host, load, &manifest, args, &outputs, &ui).await?;
            if args.push {
                // From `.nixpack/`, as `nixpack push` does: no engine.
                super::push::push_all(&manifest, &images, &[], o, credentials, &ui).await?;
            }
            Ok(())
        };
        tokio::select! {
            r = work => {
                if let Some(engine) = &engine {
                    signals.or_exit(engine.cleanup.run(engine)).await;
                }
                r
            }
            _ = signals.recv() => {
                ui.log("interrupted: removing what nixpack started (Ctrl-C again to exit at once)");
                crate::outputs::interrupt();
                if let Some(engine) = &engine {
                    signals.or_exit(engine.cleanup.run_interrupted(engine)).await;
                }
                Err(Error::interrupted())
            }
        }
    });
    finish_runtime(runtime, &result, &manifest);
    result
}

/// Ends the runtime without waiting for blocking tasks an interrupt cut
/// off (a layer writer, an archive producer): their inputs are gone, and
/// Ctrl-C must return at once. Then removes the temporary files they left.
fn finish_runtime(
    runtime: tokio::runtime::Runtime,
    result: &Result<(), Error>,
    manifest: &Manifest,
) {
    runtime.shutdown_timeout(Duration::from_millis(200));
    if result.as_ref().is_err_and(|e| e.exit_code() == 130) {
        crate::outputs::sweep_temporaries(&crate::outputs::project_dir(manifest));
    }
}

/// Whether `nix-build` is on PATH (`runner = "auto"`).
fn nix_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("nix-build").is_file()))
}

async fn build(
    engine: Option<&Engine>,
    host: bool,
    load: bool,
    manifest: &Manifest,
    args: &BuildArgs,
    outputs: &[(String, Output)],
    ui: &Ui,
) -> Result<(), Error> {
    let started = Instant::now();
    let images = select(manifest, args)?;
    let renderer = Renderer::new(manifest)?;
    let ctx = Ctx {
        engine,
        manifest,
        renderer: &renderer,
        ui,
    };
    let project = stages::nix::sources(&ctx).await?;
    let backend = if host {
        Backend::host().await?
    } else {
        let engine = ctx.engine()?;
        let (builder, _built) = stages::builder::ensure(&ctx).await?;
        let store = stages::store::ensure(&ctx, &builder).await?;
        // For `nixpack gc`: this project now uses this builder and volume.
        let recorded = crate::projects::record_build(
            &engine.host,
            &std::fs::canonicalize(&manifest.path).unwrap_or_else(|_| manifest.path.clone()),
            crate::projects::ProjectUse {
                builder: builder.reference.clone(),
                store_volume: store.name.clone(),
                images: manifest.images.iter().map(|i| i.name.to_string()).collect(),
            },
        )
        .await;
        if let Err(e) = recorded {
            ui.log(&format!("warning: could not record this build for `nixpack gc` ({e}); gc will keep its builder and volume"));
        }
        Backend::Docker { builder, store }
    };

    let results: Vec<(String, Result<Outcome, Error>)> = futures_util::stream::iter(images)
        .map(|image| {
            let ctx = &ctx;
            let backend = &backend;
            let project = &project;
            async move {
                (
                    image.reference(),
                    build_one(
                        ctx,
                        backend,
                        project,
                        image,
                        !args.locked && load,
                        load,
                        outputs,
                    )
                    .await,
                )
            }
        })
        .buffer_unordered(usize::from(args.jobs))
        .collect()
        .await;

    ui.line(&format!(
        "{:<40} {:>10} {:>6} {:>8}  {}",
        "IMAGE", "SIZE", "PATHS", "TIME", "STATUS"
    ));
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for (reference, r) in results {
        match r {
            Ok(o) => {
                let total: Duration = o.times.iter().map(|(_, d)| *d).sum();
                let status = if o.built.built {
                    format!(
                        "built ({} layer(s) written{})",
                        o.layers_written,
                        if o.nix_ran { ", nix-build ran" } else { "" }
                    )
                } else {
                    "unchanged".to_owned()
                };
                ui.line(&format!(
                    "{:<40} {:>10} {:>6} {:>7.1}s  {status}",
                    reference,
                    stages::nix::human_bytes(o.built.size),
                    o.store_paths,
                    total.as_secs_f64()
                ));
                done.push((reference, o));
            }
            Err(e) => {
                ui.line(&format!(
                    "{reference:<40} {:>10} {:>6} {:>8}  FAILED",
                    "-", "-", "-"
                ));
                failures.push((reference, e));
            }
        }
    }
    if !ui.quiet() {
        for line in done.iter().flat_map(|(_, o)| &o.changes) {
            ui.line(line);
        }
    }
    ui.log(&format!("done in {:.1}s", started.elapsed().as_secs_f64()));
    match failures.len() {
        0 => {
            finish_lock(
                engine.filter(|_| load),
                manifest,
                &backend,
                &locked_images(&done, manifest),
                args.locked,
                ui,
            )
            .await
        }
        1 => Err(failures.pop().expect("one").1),
        n => {
            for (reference, e) in &failures {
                eprintln!("{reference}: {:?}", e.report());
            }
            Err(Error::msg(
                format!("{n} images failed"),
                "see the errors above",
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn build_one(
    ctx: &Ctx<'_>,
    backend: &Backend,
    project: &stages::nix::ProjectSources,
    image: &Image,
    tag: bool,
    load: bool,
    outputs: &[(String, Output)],
) -> Result<Outcome, Error> {
    let dir = crate::outputs::image_dir(ctx.manifest, image);
    let _turn = crate::outputs::lock_file(&dir.join(".lock"), || {
        ctx.ui.log(&format!(
            "{}: waiting for another nixpack building it",
            image.reference()
        ))
    })
    .await
    .map_err(|e| Error::internal("locking the output folder", e))?;
    let t = Instant::now();
    // The closure of the build before, to say what changed.
    let previous = crate::outputs::read_closure(&dir).and_then(Result::ok);
    let (closure, nix_ran) = stages::nix::run(ctx, backend, project, image, &dir).await?;
    let nix_time = t.elapsed();
    let t = Instant::now();
    let layers = stages::layers::prepare(image, &dir, &closure)?;
    // The image stage streams each layer to the engine as soon as nixpack
    // has written it, so writing layers overlaps the engine's ingest (the
    // README's "How fast" has the numbers).
    let ready = std::sync::Arc::new(stages::layers::Ready::default());
    let produce = async {
        let r = stages::layers::produce(ctx, backend, image, &closure, &layers, &ready).await;
        (r, t.elapsed())
    };
    let assemble = stages::image::run(ctx, image, &dir, &closure, &layers, &ready, load);
    let ((written, layers_time), built) = tokio::join!(produce, assemble);
    let image_time = t.elapsed();
    // A layer failure explains an image failure, not the other way round;
    // an image made over layers that then failed is not kept.
    let layers_written = match written {
        Ok(n) => n,
        Err(e) => {
            if let (Some(b), true) = (built.as_ref().ok().filter(|b| b.built), load) {
                let _ = ctx.engine()?.remove_image(&b.id).await;
            }
            return Err(e);
        }
    };
    let built = built?;
    crate::outputs::write_sboms(&dir, &closure, stages::source_date_epoch())
        .map_err(|e| Error::internal("writing the SBOMs", e))?;
    record_layers(&dir, &closure, &layers, &built)
        .map_err(|e| Error::internal("writing layers.json", e))?;
    let changes = match previous.filter(|p| p.closure_hash() != closure.closure_hash()) {
        Some(previous) => {
            let written: Vec<&crate::layers::Layer> = layers
                .plan
                .iter()
                .filter(|l| layers.missing.contains(&l.file_name()))
                .collect();
            crate::record::Changes::between(&previous, &closure).summary(
                &image.reference(),
                (written.len(), layers.plan.len()),
                written.iter().map(|l| l.nar_size).sum(),
                5,
            )
        }
        None => vec![],
    };
    // Every stage succeeded: now the tag may move.
    if tag && built.built {
        if let Err(e) = ctx
            .engine()?
            .tag(&built.id, image.name.as_str(), image.tag.as_str())
            .await
        {
            let _ = ctx.engine()?.remove_image(&built.id).await;
            return Err(Error::user(e));
        }
        ctx.engine()?.cleanup.forget_image(&built.id);
    }
    for (name, output) in outputs.iter().filter(|(n, _)| *n == image.name.to_string()) {
        write_output(ctx, image, &built, output).map_err(|e| {
            Error::msg(
                format!("writing `{name}` to {output:?}: {e}"),
                "check the path: nixpack creates the folder or file (and its parents) and needs write access there",
            )
        })?;
    }
    let outcome = Outcome {
        store_paths: closure.paths.len(),
        result: closure.result.to_string(),
        closure_hash: format!("sha256:{}", closure.closure_hash()),
        times: [
            ("nix", nix_time),
            ("layers", layers_time),
            ("image", image_time.saturating_sub(layers_time)),
        ],
        nix_ran,
        layers_written,
        built,
        changes,
    };
    write_report(&dir, &closure, &outcome, backend);
    Ok(outcome)
}

/// `layers.json` for `nixpack inspect`: the image's layers with their
/// DiffIDs, sizes and reasons. A different list moves the old one to
/// `previous-layers.json`.
fn record_layers(
    dir: &std::path::Path,
    closure: &crate::closure::Closure,
    layers: &stages::layers::Layers,
    built: &stages::image::Built,
) -> std::io::Result<()> {
    use crate::record::{LayerList, LAYERS_FILE, PREVIOUS_LAYERS_FILE};
    let mut list = LayerList::new(closure, &layers.plan, &layers.conventions);
    list.manifest_digest = built.oci.as_ref().map(|m| m.manifest_digest.to_string());
    for l in &mut list.layers {
        let file = dir.join(&l.file);
        l.size = std::fs::metadata(&file).ok().map(|m| m.len());
        l.diff_id = stages::image::cached_diff_id(&file).ok().map(|d| d.0);
    }
    let text = list.to_json();
    let path = dir.join(LAYERS_FILE);
    let old = std::fs::read_to_string(&path).ok();
    if old.as_deref() != Some(text.as_str()) {
        if let Some(old) = old {
            crate::outputs::write_atomic(&dir.join(PREVIOUS_LAYERS_FILE), old.as_bytes())?;
        }
        crate::outputs::write_atomic(&path, text.as_bytes())?;
    }
    Ok(())
}

fn write_report(
    dir: &std::path::Path,
    closure: &crate::closure::Closure,
    o: &Outcome,
    backend: &Backend,
) {
    let (builder, volume) = match backend {
        Backend::Docker { builder, store } => (builder.reference.clone(), store.name.clone()),
        Backend::Host { nix_version } => (format!("host: {nix_version}"), "host".to_owned()),
    };
    let report = serde_json::json!({
        "image": o.built.reference,
        "builder": builder,
        "store_volume": volume,
        "id": o.built.id,
        "manifest_digest": o.built.oci.as_ref().map(|m| m.manifest_digest.to_string()),
        "config_digest": o.built.oci.as_ref().map(|m| m.config_digest.to_string()),
        "size": o.built.size,
        "result": closure.result,
        "closure_hash": closure.closure_hash(),
        "store_paths": o.store_paths,
        "nar_size": closure.nar_size(),
        "diff_ids": o.built.diff_ids,
        "built": o.built.built,
        "nix_ran": o.nix_ran,
        "layers_written": o.layers_written,
        "seconds": o.times.iter().map(|(s, d)| (s.to_string(), d.as_secs_f64())).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let text = serde_json::to_string_pretty(&report).expect("report serializes");
    let _ = crate::outputs::write_atomic(&dir.join("report.json"), text.as_bytes());
}

fn select<'m>(manifest: &'m Manifest, args: &BuildArgs) -> Result<Vec<&'m Image>, Error> {
    manifest
        .select(&args.images)
        .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))
}

/// Which image goes to which `--output`: `oci:DIR` holds the one image
/// selected, or a sub-folder per image when there are several;
/// `oci-archive:FILE` holds one image.
fn plan_outputs(outputs: &[Output], images: &[&Image]) -> Result<Vec<(String, Output)>, Error> {
    let mut planned = Vec::new();
    for o in outputs {
        match o {
            Output::Oci(dir) if images.len() > 1 => {
                for i in images {
                    let sub = dir.join(i.name.to_string().replace(['/', ':'], "_"));
                    planned.push((i.name.to_string(), Output::Oci(sub)));
                }
            }
            Output::OciArchive(file) if images.len() > 1 => {
                return Err(Error::msg(
                    format!(
                        "oci-archive:{} holds one image, and this build has {}",
                        file.display(),
                        images.len()
                    ),
                    "pick one with --image NAME, or write oci:DIR (a sub-folder per image)",
                ))
            }
            // The engine is not a file: the image stage loads it.
            Output::Docker => {}
            o => planned.extend(images.iter().map(|i| (i.name.to_string(), o.clone()))),
        }
    }
    Ok(planned)
}

/// Writes a built image to an OCI layout folder or archive.
fn write_output(
    ctx: &Ctx<'_>,
    image: &Image,
    built: &stages::image::Built,
    output: &Output,
) -> Result<(), String> {
    let made = built.oci.as_ref().ok_or(
        "the Engine's Dockerfile builder made this image (the scratch template needs it), so nixpack has no OCI image of its own to write",
    )?;
    let tag = crate::oci::ImageTag {
        name: image.name.clone(),
        tag: image.tag.clone(),
    };
    let stage = ctx
        .ui
        .stage(&image.name.to_string(), &format!("writing {output:?}"));
    match output {
        Output::Docker => {}
        Output::Oci(dir) => {
            // The SBOM goes beside the image, as a registry holds it after
            // a push. (Not into an oci-archive: that is one image, read
            // without a ref name.)
            let sbom_file =
                crate::outputs::image_dir(ctx.manifest, image).join(crate::sbom::CYCLONEDX_FILE);
            let sbom =
                std::fs::read(&sbom_file).map_err(|e| format!("{}: {e}", sbom_file.display()))?;
            let referrer = crate::oci::Referrer::sbom(
                sbom,
                crate::sbom::CYCLONEDX_FILE,
                made.index_entry(None),
            );
            crate::oci::write_layout_dir(dir, made, &built.layer_files, &tag, &[referrer])
                .map_err(|e| e.to_string())?;
        }
        Output::OciArchive(file) => {
            let parent = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            let tmp = crate::outputs::temp_file(parent).map_err(|e| e.to_string())?;
            let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp));
            crate::oci::write_layout_archive(&mut tar, made, &built.layer_files, &tag)
                .map_err(|e| e.to_string())?;
            let tmp = tar
                .into_inner()
                .map_err(|e| e.to_string())?
                .into_inner()
                .map_err(|e| e.to_string())?;
            tmp.persist(file).map_err(|e| e.to_string())?;
        }
    }
    stage.done("written");
    Ok(())
}

/// The lock entries of the images that built, each with the engine's id
/// for the image (to tag or remove it by).
fn locked_images(done: &[(String, Outcome)], manifest: &Manifest) -> Vec<(LockedImage, String)> {
    done.iter()
        .filter_map(|(reference, o)| {
            let image = manifest
                .images
                .iter()
                .find(|i| i.reference() == *reference)?;
            let made = o.built.oci.as_ref();
            let locked = LockedImage {
                name: image.name.to_string(),
                tag: image.tag.to_string(),
                result: o.result.clone(),
                closure_hash: o.closure_hash.clone(),
                manifest_digest: made.map(|m| m.manifest_digest.to_string()),
                config_digest: made.map(|m| m.config_digest.to_string()),
                diff_ids: o.built.diff_ids.clone(),
            };
            Some((locked, o.built.id.clone()))
        })
        .collect()
}

/// Writes nixpack.lock, or with `--locked` compares it and tags the
/// images only when it would not change.
async fn finish_lock(
    engine: Option<&Engine>,
    manifest: &Manifest,
    backend: &Backend,
    done: &[(LockedImage, String)],
    locked: bool,
    ui: &Ui,
) -> Result<(), Error> {
    let path = manifest.root.join(LOCK_NAME);
    // Read, merge and write under a lock: a parallel `--image` build would
    // otherwise drop this one's entries.
    let _turn =
        crate::outputs::lock_file(&crate::outputs::project_dir(manifest).join(".lock"), || {
            ui.log("waiting for another nixpack writing nixpack.lock")
        })
        .await
        .map_err(|e| Error::internal("locking nixpack.lock", e))?;
    let old_text = std::fs::read_to_string(&path).ok();
    let old = match old_text.as_deref().map(Lock::parse) {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) if locked => {
            return Err(Error::msg(
                e,
                "remove nixpack.lock and build without --locked to write a fresh one",
            ))
        }
        _ => None,
    };
    let order: Vec<String> = manifest.images.iter().map(|i| i.name.to_string()).collect();
    let lock = Lock::merge(
        old.as_ref(),
        match backend {
            Backend::Docker { builder, .. } => LockedBuilder {
                from: manifest.builder.from.to_string(),
                base_rootfs: builder.base_rootfs.clone(),
            },
            // The host's Nix built it: the lock says which.
            Backend::Host { nix_version } => LockedBuilder {
                from: "host".to_owned(),
                base_rootfs: nix_version.clone(),
            },
        },
        done.iter().map(|(l, _)| l.clone()).collect(),
        &order,
    );
    let text = lock.render();
    if locked {
        let Some(old_text) = old_text else {
            return Err(Error::msg(
                "--locked, but there is no nixpack.lock",
                "build once without --locked to write it, and check it in",
            ));
        };
        if old_text != text {
            // The images made for this build stay untagged: remove them
            // (never forced, so an image still tagged elsewhere stays).
            for (_, id) in done {
                if let Some(engine) = engine {
                    let _ = engine.remove_image(id).await;
                }
            }
            return Err(Error::msg(
                format!("the build would change nixpack.lock:\n{}", lock::diff(&old_text, &text)),
                "if the change is intended, build without --locked and check in the new nixpack.lock; no image was tagged",
            ));
        }
        for (l, id) in done {
            if let Some(engine) = engine {
                engine.tag(id, &l.name, &l.tag).await.map_err(Error::user)?;
                engine.cleanup.forget_image(id);
            }
        }
        ui.log("nixpack.lock is up to date");
        return Ok(());
    }
    if old_text.as_deref() != Some(text.as_str()) {
        let scratch = crate::outputs::project_dir(manifest);
        crate::outputs::write_atomic_via(&scratch, &path, text.as_bytes())
            .map_err(|e| Error::internal("writing nixpack.lock", e))?;
        ui.log(&format!("wrote {}", path.display()));
    }
    Ok(())
}

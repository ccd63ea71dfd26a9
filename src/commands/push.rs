//! `nixpack push`: built images straight from `.nixpack/<image>/` to
//! registries; no engine is involved.
//!
//! Reads `image-config.json`, `image-manifest.json` and `layers/*.tar`
//! (with their `.diffid` sidecars) as the build left them, refusing an
//! image that was not built or whose layer files changed since. Each layer
//! is compressed once ([`crate::compress`], cached beside it; layers in
//! parallel) and pushed as soon as it is ready; the registry is asked
//! first (`HEAD`) and what it holds is not sent. The pushed image is the
//! built one with compressed layers: the same config bytes, a manifest
//! over the compressed blobs. The manifest goes last, so an interrupted
//! push leaves no tag on a half-pushed image. Writes
//! `.nixpack/<image>/push.json`.
//!
//! Then, unless `--no-sbom`, the image's CycloneDX SBOM
//! (`sbom.cdx.json`) goes with it as an OCI 1.1 referrer: its blobs (the
//! empty config and the SBOM, skipped when present), then the artifact
//! manifest whose `subject` is the image, `PUT` by digest. A registry
//! that processes the subject says so (`OCI-Subject`) and lists it in its
//! referrers API; for the others (Debian's docker-registry has no such
//! API) the referrers tag `sha256-<hex of the image digest>` names an
//! index of the image's referrers, fetched, merged and put back. The SBOM
//! goes after the image: when it fails, the image is pushed all the same,
//! and a second `nixpack push` attaches it.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::cli::{PushArgs, PushOptions};
use crate::compress::{self, Compression};
use crate::error::Error;
use crate::manifest::{Image, Manifest};
use crate::oci::{self, Digest, ImageTag, Referrer};
use crate::reference::ImageRef;
use crate::registry::{
    BlobOutcome, BlobSource, Client, Credentials, Source, Target, INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
};
use crate::stages::nix::human_bytes;
use crate::ui::Ui;

/// What one push did: what `push.json` records per reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pushed {
    /// `REGISTRY/REPOSITORY:TAG`.
    pub reference: String,
    /// The registry (`host[:port]`).
    pub registry: String,
    /// The repository.
    pub repository: String,
    /// sha256 of the manifest pushed: what `docker pull REF@DIGEST` takes.
    pub manifest_digest: String,
    /// sha256 of the config (the same as the built image's).
    pub config_digest: String,
    /// Blobs (layers and config) sent.
    pub blobs_uploaded: usize,
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository of the registry.
    pub blobs_mounted: usize,
    /// Bytes sent in blobs.
    pub bytes_uploaded: u64,
    /// Layers compressed by this push (the others came from the cache).
    pub layers_compressed: usize,
    /// Wall time.
    pub seconds: f64,
    /// Each layer, bottom first.
    pub layers: Vec<PushedLayer>,
    /// The SBOM attached to the image (none with `--no-sbom`, or when
    /// attaching it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<PushedSbom>,
}

/// The SBOM a push attached to the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedSbom {
    /// sha256 of the referrer manifest: `skopeo inspect --raw
    /// docker://REGISTRY/REPOSITORY@DIGEST` shows it.
    pub referrer_digest: String,
    /// sha256 of the SBOM blob (`sbom.cdx.json`).
    pub sbom_digest: String,
    /// The referrers tag (`sha256-<hex of the image digest>`) whose index
    /// lists the referrer; none when the registry serves the referrers
    /// API itself.
    pub fallback_tag: Option<String>,
    /// Whether this push changed the index under `fallback_tag`.
    pub index_updated: bool,
    /// Blobs (the empty config, the SBOM) sent.
    pub blobs_uploaded: usize,
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
}

/// One layer of a push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    /// sha256 of the compressed blob.
    pub digest: String,
    /// Size of the compressed blob.
    pub size: u64,
    /// `uploaded`, `skipped` or `mounted`.
    pub outcome: String,
}

/// `push.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReport {
    /// The image as declared (`NAME:TAG`).
    pub image: String,
    /// How its layers were compressed.
    pub compression: Compression,
    /// One entry per reference pushed to.
    pub pushes: Vec<Pushed>,
}

/// Runs `nixpack push`.
pub fn run(manifest: Manifest, args: &PushArgs, ui: Ui) -> Result<(), Error> {
    let images = manifest
        .select(&args.images)
        .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?;
    let refs = args
        .refs
        .iter()
        .map(|r| {
            ImageRef::parse(r)
                .map_err(|e| e.to_string())
                .and_then(|r| ImageTag::from_ref(&r).map_err(|e| e.to_string()))
                .map_err(|e| {
                    Error::msg(
                        format!("`{r}` is not a reference to push to: {e}"),
                        "write [REGISTRY/]REPOSITORY[:TAG], like 127.0.0.1:5000/team/app:1",
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !refs.is_empty() && images.len() != 1 {
        return Err(Error::msg(
            format!(
                "REF names where one image goes, and {} images are selected",
                images.len()
            ),
            "pick the image with --image NAME",
        ));
    }
    let credentials = credentials(&args.options)?;
    let rt = super::runtime()?;
    let result = rt.block_on(async {
        tokio::select! {
            r = push_all(&manifest, &images, &refs, &args.options, credentials, &ui) => r.map(drop),
            _ = crate::ui::shutdown_signal() => {
                // Manifests go last: nothing half-pushed got a tag.
                ui.log("interrupted: no tag was moved to a half-pushed image");
                crate::outputs::interrupt();
                Err(Error::interrupted())
            }
        }
    });
    // A layer still being compressed is not waited for; its temporary
    // file is swept.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    if result.as_ref().is_err_and(|e| e.exit_code() == 130) {
        crate::outputs::sweep_temporaries(&crate::outputs::project_dir(&manifest));
    }
    result
}

/// The credentials of `--username` with the password read from stdin
/// (`--password-stdin`), or none (config.json is read per registry).
pub fn credentials(options: &PushOptions) -> Result<Option<(Credentials, Source)>, Error> {
    let Some(username) = &options.username else {
        return Ok(None);
    };
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| Error::internal("reading the password from stdin", e))?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(Error::msg(
            "--password-stdin read an empty password",
            "pipe the password in: `echo \"$PASSWORD\" | nixpack push --username USER --password-stdin`",
        ));
    }
    Ok(Some((
        Credentials::Basic {
            username: username.clone(),
            password,
        },
        Source::CommandLine,
    )))
}

/// Pushes each of `images` to `refs` (or, when empty, to its own
/// `NAME:TAG`), printing a line per push; the first failure stops.
pub async fn push_all(
    manifest: &Manifest,
    images: &[&Image],
    refs: &[ImageTag],
    options: &PushOptions,
    credentials: Option<(Credentials, Source)>,
    ui: &Ui,
) -> Result<Vec<Pushed>, Error> {
    let compression = Compression::from(options.compression);
    let mut all = Vec::new();
    for image in images {
        let dir = crate::outputs::image_dir(manifest, image);
        let _turn = crate::outputs::lock_file(&dir.join(".lock"), || {
            ui.log(&format!(
                "{}: waiting for another nixpack building it",
                image.reference()
            ))
        })
        .await
        .map_err(|e| Error::internal("locking the output folder", e))?;
        let local = read_local(&dir, image)?;
        let targets: Vec<ImageTag> = if refs.is_empty() {
            vec![ImageTag {
                name: image.name.clone(),
                tag: image.tag.clone(),
            }]
        } else {
            refs.to_vec()
        };
        let previous: Vec<Pushed> = std::fs::read(dir.join("push.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<PushReport>(&b).ok())
            .map(|r| r.pushes)
            .unwrap_or_default();
        let mut report = PushReport {
            image: image.reference(),
            compression,
            pushes: Vec::new(),
        };
        for tag in &targets {
            let target = Target::new(tag, options.insecure);
            // A repository of the same registry this image went to before
            // holds its blobs: mount them from there instead of sending.
            let mount_from = previous
                .iter()
                .chain(&report.pushes)
                .find(|p| p.registry == target.registry && p.repository != target.repository)
                .map(|p| p.repository.clone());
            let client = Client::connect(target, credentials.clone(), mount_from)
                .await
                .map_err(Error::user)?;
            let (mut pushed, subject) = push_one(&client, image, &local, compression, ui).await?;
            ui.line(&format!(
                "pushed {} {}  {} uploaded, {} skipped{}, {} in {:.1}s",
                pushed.reference,
                pushed.manifest_digest,
                pushed.blobs_uploaded,
                pushed.blobs_skipped,
                if pushed.blobs_mounted > 0 {
                    format!(", {} mounted", pushed.blobs_mounted)
                } else {
                    String::new()
                },
                human_bytes(pushed.bytes_uploaded),
                pushed.seconds
            ));
            let attached = if options.no_sbom {
                Ok(None)
            } else {
                attach_sbom(&client, &dir, subject).await.map(Some)
            };
            let failed = match attached {
                Ok(sbom) => {
                    if let Some(s) = &sbom {
                        ui.line(&format!(
                            "attached SBOM {}/{}@{}{}",
                            pushed.registry,
                            pushed.repository,
                            s.referrer_digest,
                            match &s.fallback_tag {
                                Some(t) => format!(" (listed under the tag {t})"),
                                None => " (the registry lists it as a referrer)".to_owned(),
                            }
                        ));
                    }
                    pushed.sbom = sbom;
                    None
                }
                Err(e) => Some(Error::msg(
                    format!(
                        "pushed {} {}, but attaching its SBOM failed: {e}",
                        pushed.reference, pushed.manifest_digest
                    ),
                    "the image itself is in the registry; run `nixpack push` again to attach the SBOM (the blobs already there are skipped), or pass --no-sbom to push without it",
                )),
            };
            report.pushes.push(pushed);
            if let Some(e) = failed {
                write_report(&dir, &report)?;
                return Err(e);
            }
        }
        write_report(&dir, &report)?;
        all.extend(report.pushes);
    }
    Ok(all)
}

fn write_report(dir: &Path, report: &PushReport) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(report).expect("the report serialises");
    crate::outputs::write_atomic(&dir.join("push.json"), text.as_bytes())
        .map_err(|e| Error::internal("writing push.json", e))
}

/// Attaches the CycloneDX SBOM the build wrote to `dir` to the pushed
/// image `subject` (its manifest descriptor), as an OCI 1.1 referrer; see
/// the module doc. The error is a sentence: the caller says the image
/// itself was pushed.
async fn attach_sbom(
    client: &Client,
    dir: &Path,
    subject: oci_spec::image::Descriptor,
) -> Result<PushedSbom, String> {
    let path = dir.join(crate::sbom::CYCLONEDX_FILE);
    let sbom = std::fs::read(&path).map_err(|e| {
        format!(
            "{}: {e} (every build writes it: build the image again)",
            path.display()
        )
    })?;
    let subject_digest = Digest::parse(subject.digest().as_ref()).map_err(|e| e.to_string())?;
    let referrer = Referrer::sbom(sbom, crate::sbom::CYCLONEDX_FILE, subject);
    let sent = Arc::new(AtomicU64::new(0));
    let (mut uploaded, mut skipped) = (0, 0);
    for (digest, bytes) in referrer.blobs() {
        let outcome = client
            .ensure_blob(
                &digest,
                bytes.len() as u64,
                &BlobSource::Bytes(bytes::Bytes::copy_from_slice(bytes)),
                &sent,
            )
            .await
            .map_err(|e| e.to_string())?;
        if outcome == BlobOutcome::Uploaded {
            uploaded += 1;
        } else {
            skipped += 1;
        }
    }
    let native = client
        .put_manifest_as(
            referrer.manifest_digest.as_str(),
            MANIFEST_MEDIA_TYPE,
            &referrer.manifest,
            &referrer.manifest_digest,
            "the SBOM referrer",
        )
        .await
        .map_err(|e| e.to_string())?;
    let (fallback_tag, index_updated) = if native {
        (None, false)
    } else {
        let tag = oci::referrers_tag(&subject_digest);
        let existing = client
            .get_manifest(&tag, INDEX_MEDIA_TYPE)
            .await
            .map_err(|e| e.to_string())?;
        let merged = oci::merge_referrers_index(existing.as_deref(), &referrer.descriptor())
            .map_err(|e| e.to_string())?;
        let changed = existing.as_deref() != Some(&merged[..]);
        if changed {
            client
                .put_manifest_as(
                    &tag,
                    INDEX_MEDIA_TYPE,
                    &merged,
                    &Digest::of(&merged),
                    "the referrers index",
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        (Some(tag), changed)
    };
    Ok(PushedSbom {
        referrer_digest: referrer.manifest_digest.to_string(),
        sbom_digest: referrer.blob_digest.to_string(),
        fallback_tag,
        index_updated,
        blobs_uploaded: uploaded,
        blobs_skipped: skipped,
    })
}

/// The built image as the build left it, with its layer files.
struct Local {
    image: oci::Image,
    files: Vec<PathBuf>,
}

/// Reads the image the build wrote to `dir` and finds the file of each
/// of its layers, refusing when something is missing or changed.
fn read_local(dir: &Path, image: &Image) -> Result<Local, Error> {
    let build_first = format!(
        "build it first: `nixpack build --image {}` (or `nixpack build --push`)",
        image.name
    );
    let read = |file: &str| std::fs::read(dir.join(file));
    let (config, manifest) = match (read("image-config.json"), read("image-manifest.json")) {
        (Ok(c), Ok(m)) => (c, m),
        _ => {
            return Err(Error::msg(
                format!(
                "{} has not been built here: {} holds no image-config.json and image-manifest.json (an image the Engine's Dockerfile builder made, for a scratch template beyond FROM/ADD/ENV/…, has none and cannot be pushed by nixpack)",
                image.reference(),
                dir.display()
            ),
                build_first,
            ))
        }
    };
    let built = oci::Image::from_bytes(config, manifest).map_err(|e| {
        Error::msg(
            format!("the built image of {} is damaged: {e}", image.reference()),
            build_first.clone(),
        )
    })?;
    // Layer files by DiffID (cached in their `.diffid` sidecars).
    let layers_dir = dir.join("layers");
    let mut by_diff_id = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(&layers_dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "tar") {
                let id = crate::stages::image::cached_diff_id(&path)
                    .map_err(|e| Error::internal("reading layer DiffIDs", e))?;
                by_diff_id.insert(id, path);
            }
        }
    }
    let files = built
        .layers
        .iter()
        .map(|l| {
            let path = by_diff_id
                .get(&l.diff_id)
                .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == l.size))
                .ok_or_else(|| {
                    Error::msg(
                        format!(
                            "the built image of {} is stale: its layer {} is no longer in {}",
                            image.reference(),
                            l.diff_id.0,
                            layers_dir.display()
                        ),
                        format!("the layers changed since the image was built; {build_first}"),
                    )
                })?;
            Ok(path.clone())
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Local {
        image: built,
        files,
    })
}

/// Pushes `local` through `client`: compresses (cached) and sends each
/// layer the registry lacks, largest first and in parallel, then the
/// config, then the manifest.
async fn push_one(
    client: &Client,
    image: &Image,
    local: &Local,
    compression: Compression,
    ui: &Ui,
) -> Result<(Pushed, oci_spec::image::Descriptor), Error> {
    let started = Instant::now();
    let target = client.target().clone();
    let registry_err = Error::user;

    // Everything compressed already: when the tag already names this
    // manifest, the registry holds every blob and there is nothing to do.
    let cached: Option<Vec<compress::Compressed>> = local
        .image
        .layers
        .iter()
        .zip(&local.files)
        .map(|(l, f)| compress::cached(f, &l.diff_id, compression))
        .collect();
    if let Some(cached) = cached {
        let pushed = local
            .image
            .with_layers(cached.iter().map(|c| c.blob.clone()).collect())
            .map_err(|e| Error::internal("the pushed image", e))?;
        let current = client
            .manifest_digest(&target.tag)
            .await
            .map_err(registry_err)?;
        if current.as_deref() == Some(pushed.manifest_digest.as_str()) {
            let outcomes = vec![BlobOutcome::Present; cached.len()];
            return Ok((
                summary(
                    &target,
                    &pushed,
                    &cached,
                    &outcomes,
                    BlobOutcome::Present,
                    0,
                    0,
                    started,
                ),
                pushed.index_entry(None),
            ));
        }
    }

    let stage = ui.stage(
        &image.name.to_string(),
        &format!("pushing to {}", target.display()),
    );
    let sent = Arc::new(AtomicU64::new(0));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cpu = Arc::new(tokio::sync::Semaphore::new(workers));
    let mut order: Vec<usize> = (0..local.files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(local.image.layers[i].size));
    let work = futures_util::stream::iter(order)
        .map(|i| {
            let (cpu, sent) = (cpu.clone(), sent.clone());
            let file = local.files[i].clone();
            let diff_id = local.image.layers[i].diff_id.clone();
            async move {
                let made = {
                    let _permit = cpu.acquire_owned().await.expect("never closed");
                    tokio::task::spawn_blocking(move || {
                        compress::compressed(&file, &diff_id, compression)
                    })
                    .await
                    .map_err(|e| Error::internal("compressing a layer", e))?
                    .map_err(|e| Error::internal("compressing a layer", e))?
                };
                let outcome = client
                    .ensure_blob(
                        &made.blob.digest,
                        made.blob.size,
                        &BlobSource::File(made.path.clone()),
                        &sent,
                    )
                    .await
                    .map_err(registry_err)?;
                Ok::<_, Error>((i, made, outcome))
            }
        })
        .buffer_unordered(workers + 2)
        .try_collect::<Vec<_>>();
    tokio::pin!(work);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut done = loop {
        tokio::select! {
            r = &mut work => break r?,
            _ = tick.tick() => stage.message(&format!("{} sent", human_bytes(sent.load(Ordering::Relaxed)))),
        }
    };
    done.sort_by_key(|(i, ..)| *i);
    let compressed_now = done.iter().filter(|(_, c, _)| c.made).count();
    let (blobs, outcomes): (Vec<_>, Vec<_>) = done.into_iter().map(|(_, c, o)| (c, o)).unzip();
    let pushed = local
        .image
        .with_layers(blobs.iter().map(|c| c.blob.clone()).collect())
        .map_err(|e| Error::internal("the pushed image", e))?;
    let config = client
        .ensure_blob(
            &pushed.config_digest,
            pushed.config.len() as u64,
            &BlobSource::Bytes(pushed.config.clone().into()),
            &sent,
        )
        .await
        .map_err(registry_err)?;
    client
        .put_manifest(&pushed.manifest, &pushed.manifest_digest)
        .await
        .map_err(registry_err)?;
    let bytes = sent.load(Ordering::Relaxed);
    stage.done(&format!("{} sent", human_bytes(bytes)));
    Ok((
        summary(
            &target,
            &pushed,
            &blobs,
            &outcomes,
            config,
            bytes,
            compressed_now,
            started,
        ),
        pushed.index_entry(None),
    ))
}

#[allow(clippy::too_many_arguments)]
fn summary(
    target: &Target,
    pushed: &oci::Image,
    blobs: &[compress::Compressed],
    outcomes: &[BlobOutcome],
    config: BlobOutcome,
    bytes_uploaded: u64,
    layers_compressed: usize,
    started: Instant,
) -> Pushed {
    let count =
        |o: BlobOutcome| outcomes.iter().filter(|x| **x == o).count() + usize::from(config == o);
    Pushed {
        reference: target.display(),
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        manifest_digest: pushed.manifest_digest.to_string(),
        config_digest: pushed.config_digest.to_string(),
        blobs_uploaded: count(BlobOutcome::Uploaded),
        blobs_skipped: count(BlobOutcome::Present),
        blobs_mounted: count(BlobOutcome::Mounted),
        bytes_uploaded,
        layers_compressed,
        seconds: started.elapsed().as_secs_f64(),
        layers: blobs
            .iter()
            .zip(outcomes)
            .map(|(c, o)| PushedLayer {
                diff_id: c.blob.diff_id.0.clone(),
                digest: c.blob.digest.to_string(),
                size: c.blob.size,
                outcome: match o {
                    BlobOutcome::Present => "skipped",
                    BlobOutcome::Mounted => "mounted",
                    BlobOutcome::Uploaded => "uploaded",
                }
                .to_owned(),
            })
            .collect(),
        sbom: None,
    }
}

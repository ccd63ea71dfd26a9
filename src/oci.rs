//! The OCI image nixpack writes itself, and the sinks that take its bytes.
//!
//! An [`Image`] is three kinds of blob: the image **config** (what to run,
//! and the DiffIDs of the layers), the **manifest** (descriptors of the
//! config and of each layer blob, as stored), and the **layers**. nixpack
//! computes every byte of the config and the manifest here, from the same
//! recipe the Dockerfile renders to, so every sink — the Engine, an OCI
//! layout folder or archive, a registry — receives the same bytes and
//! therefore the same digests.
//!
//! Two hashes are kept apart by type, as in go-containerregistry:
//! - [`DiffId`]: the sha256 of a layer's *uncompressed* tar; the config
//!   lists these, and an engine checks them when it unpacks a layer.
//! - [`Digest`]: the sha256 of a blob *as stored* (config, manifest, a layer
//!   as sent). For an uncompressed layer both hashes are of the same bytes
//!   and equal; a gzip layer for a registry has another [`Digest`] and size
//!   but the same [`DiffId`], which is why a [`LayerBlob`] carries its media
//!   type, digest and size as inputs.
//!
//! Identity is by construction: the JSON is serialised through
//! [`serde_json::Value`] with every object's keys sorted (`oci-spec` keeps
//! labels and annotations in `HashMap`s, whose order changes from run to
//! run), and the `created` time is fixed by the caller
//! (`SOURCE_DATE_EPOCH`). Golden tests pin the digests, so a crate upgrade
//! cannot change an image id unnoticed.
//!
//! The model is pure. The writers at the bottom stream layer files into a
//! tar or a folder and never hold a layer in memory:
//! - [`write_engine_archive`]: the tree `docker save` writes since Docker
//!   25 (`oci-layout`, `index.json`, `blobs/sha256/…`) plus the classic
//!   `manifest.json`, so both the classic and the containerd image store
//!   can load it;
//! - [`write_layout_archive`]: the same tree without `manifest.json` (an
//!   `oci-archive`);
//! - [`write_layout_dir`]: an OCI image layout folder, updated in place.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub use oci_spec::image::MediaType;
use oci_spec::image::{
    ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndex, ImageIndexBuilder, ImageManifestBuilder, RootFsBuilder, ANNOTATION_REF_NAME,
    ANNOTATION_TITLE,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::archive::{rfc3339, DiffId};
use crate::closure::hex;
use crate::reference::{ImageName, ImageRef, Tag};

/// The annotation containerd (and so Docker's containerd image store)
/// reads as the image's full name when it imports an archive.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The mtime of every entry of the archives: fixed, so the same image gives
/// the same archive bytes.
const ENTRY_MTIME: u64 = 1;

/// The content of the `oci-layout` file.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `sha256:<hex>` of a blob as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_hash(&Sha256::digest(bytes))
    }

    /// The digest of everything `reader` yields, streamed.
    pub fn of_reader(mut reader: impl Read) -> io::Result<Digest> {
        let mut w = HashingWriter::new(io::sink());
        io::copy(&mut reader, &mut w)?;
        Ok(w.finish().0)
    }

    /// Parses `sha256:` followed by 64 lower-case hex digits.
    pub fn parse(s: &str) -> Result<Digest, OciError> {
        match s.strip_prefix("sha256:") {
            Some(h)
                if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(Digest(s.to_owned()))
            }
            _ => Err(OciError::BadDigest {
                digest: s.to_owned(),
            }),
        }
    }

    /// The digest of an uncompressed layer: the same hash of the same
    /// bytes as its DiffID.
    pub fn of_uncompressed(diff_id: &DiffId) -> Digest {
        Digest(diff_id.0.clone())
    }

    /// The hex part, which names the blob in `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The blob's path inside a layout: `blobs/sha256/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }

    fn from_hash(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex(hash)))
    }

    fn to_spec(&self) -> oci_spec::image::Digest {
        self.0
            .parse()
            .expect("a sha256 digest is a valid OCI digest")
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One layer as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the uncompressed tar (listed in the config).
    pub diff_id: DiffId,
    /// sha256 of the blob as stored (listed in the manifest).
    pub digest: Digest,
    /// Size in bytes of the blob as stored.
    pub size: u64,
    /// `application/vnd.oci.image.layer.v1.tar`, `…+gzip`, …
    pub media_type: MediaType,
}

impl LayerBlob {
    /// An uncompressed layer: its digest is its DiffID.
    pub fn uncompressed(diff_id: DiffId, size: u64) -> LayerBlob {
        LayerBlob {
            digest: Digest::of_uncompressed(&diff_id),
            diff_id,
            size,
            media_type: MediaType::ImageLayer,
        }
    }
}

/// An image: its config and manifest bytes, their digests, and the layer
/// descriptors. Build it with [`Image::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image config, canonical JSON.
    pub config: Vec<u8>,
    /// sha256 of `config`: the image id on Docker's classic store.
    pub config_digest: Digest,
    /// The image manifest, canonical JSON.
    pub manifest: Vec<u8>,
    /// sha256 of `manifest`: what registries and containerd name the image by.
    pub manifest_digest: Digest,
    /// The layers, bottom first.
    pub layers: Vec<LayerBlob>,
}

impl Image {
    /// The image of `recipe` over `layers` (bottom first). `layer_notes`
    /// become the config's history (one entry each, as `created_by`);
    /// `architecture` is a GOARCH name such as `amd64`; `created_epoch`
    /// (seconds) is the `created` time of the image and of each history
    /// entry.
    pub fn new(
        recipe: &crate::dockerfile::Recipe,
        layers: Vec<LayerBlob>,
        layer_notes: &[String],
        architecture: &str,
        created_epoch: u64,
    ) -> Image {
        let diff_ids: Vec<DiffId> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let config = config_json(recipe, &diff_ids, layer_notes, architecture, created_epoch);
        let config_digest = Digest::of(&config);
        let manifest = manifest_json(&config_digest, config.len() as u64, &layers);
        let manifest_digest = Digest::of(&manifest);
        Image {
            config,
            config_digest,
            manifest,
            manifest_digest,
            layers,
        }
    }

    /// The image nixpack wrote into `.nixpack/<image>/`: its config and
    /// manifest bytes as read back (`image-config.json`,
    /// `image-manifest.json`). The manifest must name this config, and the
    /// config must list one DiffID per layer.
    pub fn from_bytes(config: Vec<u8>, manifest: Vec<u8>) -> Result<Image, OciError> {
        let bad = |reason: String| OciError::BadImage { reason };
        let parsed: oci_spec::image::ImageManifest =
            serde_json::from_slice(&manifest).map_err(|e| bad(format!("manifest: {e}")))?;
        let run: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&config).map_err(|e| bad(format!("config: {e}")))?;
        let config_digest = Digest::of(&config);
        let named = Digest::parse(parsed.config().digest().as_ref())?;
        if named != config_digest {
            return Err(OciError::DigestMismatch {
                path: PathBuf::from("image-config.json"),
                expected: named,
                found: config_digest,
            });
        }
        let diff_ids = run.rootfs().diff_ids();
        if diff_ids.len() != parsed.layers().len() {
            return Err(bad(format!(
                "the manifest has {} layers and the config {} DiffIDs",
                parsed.layers().len(),
                diff_ids.len()
            )));
        }
        let layers = parsed
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| {
                Ok(LayerBlob {
                    diff_id: DiffId(d.clone()),
                    digest: Digest::parse(l.digest().as_ref())?,
                    size: l.size(),
                    media_type: l.media_type().clone(),
                })
            })
            .collect::<Result<Vec<_>, OciError>>()?;
        Ok(Image {
            manifest_digest: Digest::of(&manifest),
            config,
            config_digest,
            manifest,
            layers,
        })
    }

    /// The same image with its layers stored another way (compressed for
    /// a registry): the same config bytes, so the same DiffIDs and config
    /// digest, and a manifest over `layers`. Each of `layers` must carry
    /// the DiffID of the layer it replaces.
    pub fn with_layers(&self, layers: Vec<LayerBlob>) -> Result<Image, OciError> {
        if layers.len() != self.layers.len() {
            return Err(OciError::LayerCount {
                layers: self.layers.len(),
                files: layers.len(),
            });
        }
        if let Some((old, new)) = self
            .layers
            .iter()
            .zip(&layers)
            .find(|(old, new)| old.diff_id != new.diff_id)
        {
            return Err(OciError::BadImage {
                reason: format!(
                    "a layer with DiffID {} was given where the config lists {}",
                    new.diff_id.0, old.diff_id.0
                ),
            });
        }
        let manifest = manifest_json(&self.config_digest, self.config.len() as u64, &layers);
        Ok(Image {
            config: self.config.clone(),
            config_digest: self.config_digest.clone(),
            manifest_digest: Digest::of(&manifest),
            manifest,
            layers,
        })
    }

    /// The descriptor of the manifest, as an index lists it: annotated with
    /// the tag (`org.opencontainers.image.ref.name`) and the full name
    /// containerd reads (`io.containerd.image.name`) when `tag` is given.
    pub fn index_entry(&self, tag: Option<&ImageTag>) -> Descriptor {
        let mut d = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(self.manifest_digest.to_spec())
            .size(self.manifest.len() as u64);
        if let Some(t) = tag {
            d = d.annotations([
                (ANNOTATION_CONTAINERD_NAME.to_owned(), t.normalized()),
                (ANNOTATION_REF_NAME.to_owned(), t.tag.as_str().to_owned()),
            ]);
        }
        d.build().expect("every required descriptor field is set")
    }

    /// Every blob of the image with its digest and size: the layers, then
    /// the config, then the manifest (the order the archives use). A layer
    /// listed twice is listed once.
    fn blob_order(&self) -> Vec<(&Digest, u64)> {
        let mut seen = BTreeSet::new();
        self.layers
            .iter()
            .map(|l| (&l.digest, l.size))
            .chain([
                (&self.config_digest, self.config.len() as u64),
                (&self.manifest_digest, self.manifest.len() as u64),
            ])
            .filter(|(d, _)| seen.insert(*d))
            .collect()
    }
}

/// A repository and a tag, the name an image is stored under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageTag {
    /// The repository, as written (`app`, `localhost:5000/team/app`).
    pub name: ImageName,
    /// The tag (`latest` when none was written).
    pub tag: Tag,
}

impl ImageTag {
    /// The name and tag of `reference`, `latest` when it has no tag. A
    /// reference pinned by digest names content, not a place to store it,
    /// and is refused.
    pub fn from_ref(reference: &ImageRef) -> Result<ImageTag, OciError> {
        if reference.digest.is_some() {
            return Err(OciError::DigestReference {
                reference: reference.to_string(),
            });
        }
        Ok(ImageTag {
            name: reference.name.clone(),
            tag: reference
                .tag
                .clone()
                .unwrap_or_else(|| Tag::parse("latest").expect("`latest` is a tag")),
        })
    }

    /// `name:tag` as written, for `manifest.json`'s `RepoTags`.
    pub fn repo_tag(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// The fully qualified name the Engine normalises to:
    /// `docker.io/library/app:latest` for `app:latest`.
    pub fn normalized(&self) -> String {
        let name = self.name.as_str();
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest)
            }
            _ => ("docker.io", name),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io"
        } else {
            domain
        };
        if domain == "docker.io" && !path.contains('/') {
            format!("docker.io/library/{path}:{}", self.tag)
        } else {
            format!("{domain}/{path}:{}", self.tag)
        }
    }
}

impl fmt::Display for ImageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repo_tag())
    }
}

/// What went wrong writing or reading an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A layer file's bytes are not the blob the manifest names.
    #[error("{path} has digest {found}, the manifest expects {expected}")]
    DigestMismatch {
        /// The layer file.
        path: PathBuf,
        /// The digest in the manifest.
        expected: Digest,
        /// The digest of the file.
        found: Digest,
    },
    /// A layer file's size is not the one in the manifest.
    #[error("{path} has {found} bytes, the manifest expects {expected}")]
    SizeMismatch {
        /// The layer file.
        path: PathBuf,
        /// The size in the manifest.
        expected: u64,
        /// The size of the file.
        found: u64,
    },
    /// Not one file per layer.
    #[error("the image has {layers} layers but {files} layer files were given")]
    LayerCount {
        /// Layers in the image.
        layers: usize,
        /// Files given.
        files: usize,
    },
    /// A string that is not `sha256:<64 hex>`.
    #[error("`{digest}` is not a digest like `sha256:<64 hex digits>`")]
    BadDigest {
        /// The string.
        digest: String,
    },
    /// An image can be stored under a tag, not under a digest.
    #[error("`{reference}` names an image by digest; give a tag to store it under")]
    DigestReference {
        /// The reference.
        reference: String,
    },
    /// Config and manifest bytes that do not make one image.
    #[error("not a nixpack image: {reason}")]
    BadImage {
        /// What is wrong.
        reason: String,
    },
    /// An existing `index.json` that is not an OCI image index.
    #[error("{path} is not an OCI image index: {reason}")]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// What a registry holds under a referrers tag is not an image index.
    #[error("the referrers tag holds no OCI image index: {reason}")]
    BadReferrersIndex {
        /// What is wrong.
        reason: String,
    },
}

impl From<OciError> for io::Error {
    fn from(e: OciError) -> io::Error {
        match e {
            OciError::Io { source, .. } => source,
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

// ---------------------------------------------------------------------------
// The model: canonical JSON.

/// `value` as JSON with the keys of every object sorted and no whitespace.
fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                // Rebuilt in sorted order, so the result is sorted whether
                // serde_json's map is a BTreeMap or (with `preserve_order`,
                // which any crate in the build may switch on) an IndexMap.
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    let value = serde_json::to_value(value).expect("OCI types serialise to JSON");
    serde_json::to_vec(&sorted(value)).expect("a JSON value serialises")
}

/// The image config as canonical JSON.
///
/// Empty settings are left out rather than written as empty lists, as
/// `docker build` does for a scratch image.
pub fn config_json(
    recipe: &crate::dockerfile::Recipe,
    diff_ids: &[DiffId],
    layer_notes: &[String],
    architecture: &str,
    created_epoch: u64,
) -> Vec<u8> {
    let created = rfc3339(created_epoch);
    let mut run = ConfigBuilder::default();
    if let Some(user) = &recipe.user {
        run = run.user(user.clone());
    }
    if !recipe.exposed.is_empty() {
        run = run.exposed_ports(recipe.exposed.clone());
    }
    if !recipe.env.is_empty() {
        run = run.env(
            recipe
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(e) = &recipe.entrypoint {
        run = run.entrypoint(e.clone());
    }
    if let Some(c) = &recipe.cmd {
        run = run.cmd(c.clone());
    }
    if let Some(w) = &recipe.workdir {
        run = run.working_dir(w.clone());
    }
    if !recipe.labels.is_empty() {
        run = run.labels(
            recipe
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let history = layer_notes
        .iter()
        .map(|note| {
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(note.clone())
                .build()
                .expect("history has no required field")
        })
        .collect::<Vec<_>>();
    let config = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(architecture)
        .os("linux")
        .config(run.build().expect("the run config has no required field"))
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids.iter().map(|d| d.0.clone()).collect::<Vec<_>>())
                .build()
                .expect("rootfs fields are set"),
        )
        .history(history)
        .build()
        .expect("every required config field is set");
    canonical_json(&config)
}

/// The image manifest as canonical JSON: `schemaVersion` 2, the OCI
/// manifest media type, the config descriptor and one descriptor per
/// layer blob (media type, digest and size as given).
pub fn manifest_json(config_digest: &Digest, config_size: u64, layers: &[LayerBlob]) -> Vec<u8> {
    let config = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(config_digest.to_spec())
        .size(config_size)
        .build()
        .expect("config descriptor fields are set");
    let layers = layers
        .iter()
        .map(|l| {
            DescriptorBuilder::default()
                .media_type(l.media_type.clone())
                .digest(l.digest.to_spec())
                .size(l.size)
                .build()
                .expect("layer descriptor fields are set")
        })
        .collect::<Vec<_>>();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .expect("every required manifest field is set");
    canonical_json(&manifest)
}

/// An image index (`index.json`) listing `manifests`, as canonical JSON.
pub fn index_json(manifests: Vec<Descriptor>) -> Vec<u8> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("every required index field is set");
    canonical_json(&index)
}

/// The classic store's `manifest.json`: one image, its config and layers
/// as paths in the archive, and its tags (`null` when untagged).
pub fn docker_manifest_json(image: &Image, tags: &[ImageTag]) -> Vec<u8> {
    let repo_tags =
        (!tags.is_empty()).then(|| tags.iter().map(ImageTag::repo_tag).collect::<Vec<_>>());
    canonical_json(&serde_json::json!([{
        "Config": image.config_digest.blob_path(),
        "RepoTags": repo_tags,
        "Layers": image.layers.iter().map(|l| l.digest.blob_path()).collect::<Vec<_>>(),
    }]))
}

// ---------------------------------------------------------------------------
// Referrers: the SBOM attached to an image (OCI 1.1).

/// The media type of a CycloneDX JSON document: the SBOM blob's, and the
/// `artifactType` of the manifest that carries it.
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// The empty config of an artifact manifest (`application/vnd.oci.empty.v1+json`):
/// the two bytes `{}`.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// An artifact manifest that refers to an image (its `subject`), with the
/// one blob it carries: what `nixpack push` attaches to the image it
/// pushed, and an OCI layout lists beside it.
///
/// The manifest is an image manifest (`schemaVersion` 2) with an
/// `artifactType`, the empty config, one layer (the blob, annotated with
/// its file name as `org.opencontainers.image.title`) and the image's
/// manifest descriptor as `subject`; canonical JSON, so the same SBOM of
/// the same image always has the same digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// The artifact manifest, canonical JSON.
    pub manifest: Vec<u8>,
    /// sha256 of `manifest`: the referrer's name in a registry.
    pub manifest_digest: Digest,
    /// The `artifactType` (and the blob's media type).
    pub artifact_type: String,
    /// The blob carried (the SBOM).
    pub blob: Vec<u8>,
    /// sha256 of `blob`.
    pub blob_digest: Digest,
}

impl Referrer {
    /// The CycloneDX `sbom` (the bytes of the file `file_name`) attached
    /// to the image whose manifest descriptor is `subject`.
    pub fn sbom(sbom: Vec<u8>, file_name: &str, subject: Descriptor) -> Referrer {
        let artifact_type = CYCLONEDX_MEDIA_TYPE.to_owned();
        let blob_digest = Digest::of(&sbom);
        let config = DescriptorBuilder::default()
            .media_type(MediaType::EmptyJSON)
            .digest(Digest::of(EMPTY_CONFIG).to_spec())
            .size(EMPTY_CONFIG.len() as u64)
            .build()
            .expect("empty config descriptor fields are set");
        let layer = DescriptorBuilder::default()
            .media_type(MediaType::Other(artifact_type.clone()))
            .digest(blob_digest.to_spec())
            .size(sbom.len() as u64)
            .annotations([(ANNOTATION_TITLE.to_owned(), file_name.to_owned())])
            .build()
            .expect("blob descriptor fields are set");
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(artifact_type.clone()))
            .config(config)
            .layers(vec![layer])
            .subject(subject)
            .build()
            .expect("every required manifest field is set");
        let manifest = canonical_json(&manifest);
        Referrer {
            manifest_digest: Digest::of(&manifest),
            manifest,
            artifact_type,
            blob: sbom,
            blob_digest,
        }
    }

    /// The descriptor of the manifest as a referrers list (or an OCI
    /// layout's `index.json`) lists it: media type, digest, size and
    /// `artifactType`. The manifest has no annotations of its own, so
    /// neither has the descriptor (and no `ref.name`: it is no tag).
    pub fn descriptor(&self) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(self.manifest_digest.to_spec())
            .size(self.manifest.len() as u64)
            .artifact_type(MediaType::Other(self.artifact_type.clone()))
            .build()
            .expect("every required descriptor field is set")
    }

    /// The blobs the manifest names, with their digests: the empty config,
    /// then the carried blob.
    pub fn blobs(&self) -> [(Digest, &[u8]); 2] {
        [
            (Digest::of(EMPTY_CONFIG), EMPTY_CONFIG),
            (self.blob_digest.clone(), &self.blob[..]),
        ]
    }
}

/// The tag the OCI distribution spec 1.1 names for registries without the
/// referrers API (the "referrers tag schema"): `sha256-<hex>` of the
/// subject's digest, pointing at an image index of its referrers.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The referrers index under a [`referrers_tag`] with `entry` in it:
/// `existing` (the index the tag names now, if any) with any entry of the
/// same digest replaced by `entry`, or a new index of `entry` alone.
/// Other entries (other tools' referrers) are kept as they were, in their
/// order; the result is canonical JSON, so merging an entry already there
/// gives back an index equal to a canonical `existing`.
pub fn merge_referrers_index(
    existing: Option<&[u8]>,
    entry: &Descriptor,
) -> Result<Vec<u8>, OciError> {
    use serde_json::Value;
    let bad = |reason: String| OciError::BadReferrersIndex { reason };
    let mut index = match existing {
        Some(bytes) => serde_json::from_slice::<Value>(bytes).map_err(|e| bad(e.to_string()))?,
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageIndex.to_string(),
            "manifests": [],
        }),
    };
    let ours = serde_json::to_value(entry).expect("a descriptor serialises");
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("it has no `manifests` list".into()))?;
    match manifests
        .iter()
        .position(|m| m.get("digest") == ours.get("digest"))
    {
        Some(at) => {
            manifests[at] = ours.clone();
            let mut i = at + 1;
            while i < manifests.len() {
                if manifests[i].get("digest") == ours.get("digest") {
                    manifests.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        None => manifests.push(ours),
    }
    Ok(canonical_json(&index))
}

// ---------------------------------------------------------------------------
// Sinks: tar archives and layout folders.

/// The engine archive, streamed in three steps, so that layers can go to
/// the engine while later ones are still being written: [`start`](Self::start),
/// then each layer blob as it is ready ([`layer`](Self::layer); a layer the
/// engine already holds may be left out — both image stores then use
/// their own copy), then [`finish`](Self::finish) with the image, once
/// every DiffID is known: config, manifest, `index.json` (read by the
/// containerd image store) and `manifest.json` (read by the classic one).
pub struct EngineArchive {
    sent: BTreeSet<Digest>,
}

impl EngineArchive {
    /// Writes `oci-layout` and the blob folders.
    pub fn start<W: Write>(tar: &mut tar::Builder<W>) -> io::Result<EngineArchive> {
        append_bytes(tar, "oci-layout", OCI_LAYOUT)?;
        append_dir(tar, "blobs/")?;
        append_dir(tar, "blobs/sha256/")?;
        Ok(EngineArchive {
            sent: BTreeSet::new(),
        })
    }

    /// Streams one layer blob from `file` (once per digest).
    pub fn layer<W: Write>(
        &mut self,
        tar: &mut tar::Builder<W>,
        blob: &LayerBlob,
        file: &Path,
    ) -> io::Result<()> {
        if self.sent.insert(blob.digest.clone()) {
            append_layer_file(tar, &blob.digest.blob_path(), file, blob.size)?;
        }
        Ok(())
    }

    /// Writes the config and manifest blobs, `index.json` and
    /// `manifest.json` naming `tags` (none: an untagged image).
    pub fn finish<W: Write>(
        self,
        tar: &mut tar::Builder<W>,
        image: &Image,
        tags: &[ImageTag],
    ) -> io::Result<()> {
        append_bytes(tar, &image.config_digest.blob_path(), &image.config)?;
        append_bytes(tar, &image.manifest_digest.blob_path(), &image.manifest)?;
        append_bytes(tar, "index.json", &index_for(image, tags))?;
        append_bytes(tar, "manifest.json", &docker_manifest_json(image, tags))
    }
}

/// Writes the archive `docker load` reads on both image stores (the tree
/// `docker save` writes since Docker 25): `oci-layout`, the blobs (layers
/// streamed from `layer_files`, one per layer of `image`, then the config
/// and the manifest), `index.json` with one entry per tag (one unannotated
/// entry when `tags` is empty) and the classic `manifest.json` (`RepoTags`
/// `null` when `tags` is empty).
///
/// Each store reads its own half (measured on Docker 20.10 and 26.1):
/// - the classic store reads only `manifest.json`: it names the image by
///   `RepoTags` and its id is the config digest;
/// - the containerd store reads only `index.json`: it names the image by
///   `io.containerd.image.name` (without it, `ref.name` is taken as the
///   whole name, so `latest` becomes `latest:latest`), an entry without
///   annotations is kept as an untagged image, and its id is the manifest
///   digest. A load that fails there (a blob it lacks) has already moved
///   the tag to the broken image, where the classic store leaves the tag
///   alone.
pub fn write_engine_archive<W: Write>(
    tar: &mut tar::Builder<W>,
    image: &Image,
    layer_files: &[PathBuf],
    tags: &[ImageTag],
) -> io::Result<()> {
    append_layout(tar, image, layer_files, &index_for(image, tags))?;
    append_bytes(tar, "manifest.json", &docker_manifest_json(image, tags))
}

/// Writes an `oci-archive`: the OCI image layout of `image` under `tag`,
/// as a tar.
pub fn write_layout_archive<W: Write>(
    tar: &mut tar::Builder<W>,
    image: &Image,
    layer_files: &[PathBuf],
    tag: &ImageTag,
) -> io::Result<()> {
    append_layout(
        tar,
        image,
        layer_files,
        &index_for(image, std::slice::from_ref(tag)),
    )
}

fn index_for(image: &Image, tags: &[ImageTag]) -> Vec<u8> {
    if tags.is_empty() {
        index_json(vec![image.index_entry(None)])
    } else {
        index_json(tags.iter().map(|t| image.index_entry(Some(t))).collect())
    }
}

/// The layout tree in a fixed order: `oci-layout`, `blobs/`,
/// `blobs/sha256/`, the blobs, `index.json`.
fn append_layout<W: Write>(
    tar: &mut tar::Builder<W>,
    image: &Image,
    layer_files: &[PathBuf],
    index: &[u8],
) -> io::Result<()> {
    check_layer_files(image, layer_files)?;
    append_bytes(tar, "oci-layout", OCI_LAYOUT)?;
    append_dir(tar, "blobs/")?;
    append_dir(tar, "blobs/sha256/")?;
    for (digest, size) in image.blob_order() {
        let path = digest.blob_path();
        if digest == &image.config_digest {
            append_bytes(tar, &path, &image.config)?;
        } else if digest == &image.manifest_digest {
            append_bytes(tar, &path, &image.manifest)?;
        } else {
            let i = image
                .layers
                .iter()
                .position(|l| &l.digest == digest)
                .expect("a blob that is neither config nor manifest is a layer");
            append_layer_file(tar, &path, &layer_files[i], size)?;
        }
    }
    append_bytes(tar, "index.json", index)
}

fn check_layer_files(image: &Image, layer_files: &[PathBuf]) -> Result<(), OciError> {
    if image.layers.len() != layer_files.len() {
        return Err(OciError::LayerCount {
            layers: image.layers.len(),
            files: layer_files.len(),
        });
    }
    Ok(())
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(ENTRY_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    tar.append_data(&mut h, path, io::empty())
}

/// Streams a layer file into the tar, refusing one whose size is not the
/// manifest's (the tar entry's size must be known before its bytes).
fn append_layer_file<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &str,
    file: &Path,
    size: u64,
) -> io::Result<()> {
    let io_err = |source| OciError::Io {
        path: file.to_owned(),
        source,
    };
    let f = std::fs::File::open(file).map_err(io_err)?;
    let found = f.metadata().map_err(io_err)?.len();
    if found != size {
        return Err(OciError::SizeMismatch {
            path: file.to_owned(),
            expected: size,
            found,
        }
        .into());
    }
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, entry, io::BufReader::with_capacity(1 << 20, f))
}

/// Writes `image` into the OCI image layout folder `dir` under `tag`,
/// creating the folder if needed. Each blob goes through a temporary file,
/// hashed as it is written, and is renamed to its digest; a blob already
/// present with the right size is kept. `index.json` is replaced
/// atomically, with the entry for the same tag (ref name) replaced in
/// place and other entries kept. Blobs no entry refers to any more are
/// left for a later garbage collection.
///
/// Each of `referrers` (the SBOM) is stored too and listed in
/// `index.json` without a ref name (the image-layout spec allows
/// manifests beyond the tagged ones; readers pick by ref name), replacing
/// an entry of the same digest; a referrer of the same `artifactType`
/// whose subject is no longer listed (the image a rebuild replaced) is
/// dropped from the index.
pub fn write_layout_dir(
    dir: &Path,
    image: &Image,
    layer_files: &[PathBuf],
    tag: &ImageTag,
    referrers: &[Referrer],
) -> Result<(), OciError> {
    check_layer_files(image, layer_files)?;
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| OciError::Io {
        path: blobs.clone(),
        source,
    })?;
    let layout = dir.join("oci-layout");
    if !layout.is_file() {
        write_file_atomic(&layout, OCI_LAYOUT)?;
    }
    for (layer, file) in image.layers.iter().zip(layer_files) {
        // A layer already stored is not even opened.
        if !blob_present(&blobs, &layer.digest, layer.size) {
            let f = std::fs::File::open(file).map_err(|source| OciError::Io {
                path: file.clone(),
                source,
            })?;
            put_blob(&blobs, &layer.digest, layer.size, file, f)?;
        }
    }
    put_blob(
        &blobs,
        &image.config_digest,
        image.config.len() as u64,
        Path::new("<image config>"),
        &image.config[..],
    )?;
    put_blob(
        &blobs,
        &image.manifest_digest,
        image.manifest.len() as u64,
        Path::new("<image manifest>"),
        &image.manifest[..],
    )?;

    let index_path = dir.join("index.json");
    let mut manifests = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<ImageIndex>(&bytes)
            .map_err(|e| OciError::BadIndex {
                path: index_path.clone(),
                reason: e.to_string(),
            })?
            .manifests()
            .clone(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(OciError::Io {
                path: index_path,
                source,
            })
        }
    };
    let entry = image.index_entry(Some(tag));
    let same_ref = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .is_some_and(|r| r == tag.tag.as_str())
    };
    // Replaced in place, so other entries keep their order; any second
    // entry with the same ref name goes too (it would make it ambiguous).
    let at = manifests.iter().position(same_ref);
    manifests.retain(|d| !same_ref(d));
    manifests.insert(at.unwrap_or(manifests.len()), entry);

    for r in referrers {
        for (digest, bytes) in r.blobs() {
            put_blob(
                &blobs,
                &digest,
                bytes.len() as u64,
                Path::new("<referrer blob>"),
                bytes,
            )?;
        }
        put_blob(
            &blobs,
            &r.manifest_digest,
            r.manifest.len() as u64,
            Path::new("<referrer manifest>"),
            &r.manifest[..],
        )?;
        let ours = r.descriptor();
        manifests.retain(|d| d.digest() != ours.digest());
        manifests.push(ours);
    }
    // Referrers of images no longer listed (replaced by a rebuild) go.
    let listed: BTreeSet<String> = manifests.iter().map(|d| d.digest().to_string()).collect();
    let artifact_types: BTreeSet<String> =
        referrers.iter().map(|r| r.artifact_type.clone()).collect();
    manifests.retain(|d| {
        let Some(t) = d.artifact_type() else {
            return true;
        };
        if !artifact_types.contains(&t.to_string()) {
            return true;
        }
        let subject = std::fs::read(blobs.join(d.digest().digest()))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|m| m["subject"]["digest"].as_str().map(str::to_owned));
        subject.is_some_and(|s| listed.contains(&s))
    });
    write_file_atomic(&index_path, &index_json(manifests))
}

/// Whether `blobs/<hex>` is there with the right size. Blobs are only
/// ever renamed into place whole and checked, so the size is enough.
fn blob_present(blobs: &Path, digest: &Digest, size: u64) -> bool {
    std::fs::metadata(blobs.join(digest.hex())).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Copies `content` into `blobs/<hex>` unless a blob of that size is
/// there, checking the digest and size of what was copied.
fn put_blob(
    blobs: &Path,
    digest: &Digest,
    size: u64,
    source_name: &Path,
    mut content: impl Read,
) -> Result<(), OciError> {
    let target = blobs.join(digest.hex());
    if blob_present(blobs, digest, size) {
        return Ok(());
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| OciError::Io { path, source }
    };
    let tmp = crate::outputs::temp_file(blobs).map_err(io_err(blobs))?;
    let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp));
    io::copy(&mut content, &mut w).map_err(io_err(source_name))?;
    let (found, written, out) = w.finish();
    if written != size {
        return Err(OciError::SizeMismatch {
            path: source_name.to_owned(),
            expected: size,
            found: written,
        });
    }
    if &found != digest {
        return Err(OciError::DigestMismatch {
            path: source_name.to_owned(),
            expected: digest.clone(),
            found,
        });
    }
    let tmp = out
        .into_inner()
        .map_err(|e| io_err(blobs)(e.into_error()))?;
    set_readable(tmp.as_file()).map_err(io_err(&target))?;
    tmp.persist(&target).map_err(|e| io_err(&target)(e.error))?;
    Ok(())
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io_err = |source| OciError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = crate::outputs::temp_file(dir).map_err(io_err)?;
    tmp.write_all(bytes).map_err(io_err)?;
    set_readable(tmp.as_file()).map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// Temporary files are private (0600); layout files are ordinary files.
fn set_readable(f: &std::fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        use sha2::Digest as _;
        HashingWriter {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    /// The digest and count of what was written, and the inner writer.
    pub(crate) fn finish(self) -> (Digest, u64, W) {
        use sha2::Digest as _;
        (
            Digest::from_hash(&self.hash.finalize()),
            self.len,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::Recipe;
    use std::collections::BTreeMap;

    fn recipe() -> Recipe {
        Recipe {
            layers: vec!["a.tar".into(), "b.tar".into()],
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            labels: (0..20)
                .map(|i| (format!("org.example.label-{i:02}"), format!("v{i}")))
                .collect::<BTreeMap<_, _>>(),
            exposed: vec!["8080/tcp".into(), "53/udp".into(), "443/tcp".into()],
            workdir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            entrypoint: Some(vec!["/bin/app".into()]),
            cmd: Some(vec!["--serve".into()]),
        }
    }

    fn diff_ids() -> Vec<DiffId> {
        [&b"layer a"[..], &b"layer b"[..]]
            .iter()
            .map(|b| crate::archive::diff_id(*b).unwrap())
            .collect()
    }

    fn golden() -> Image {
        let layers = diff_ids()
            .into_iter()
            .zip([1024, 2048])
            .map(|(d, size)| LayerBlob::uncompressed(d, size))
            .collect();
        Image::new(
            &recipe(),
            layers,
            &["store paths: glibc".into(), "store paths: app".into()],
            "amd64",
            1_700_000_000,
        )
    }

    const SBOM: &[u8] = br#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#;

    fn sbom_referrer() -> Referrer {
        Referrer::sbom(SBOM.to_vec(), "sbom.cdx.json", golden().index_entry(None))
    }

    /// Pinned: the bytes of the SBOM referrer are its name in a registry;
    /// a second push of the same SBOM must find the same manifest.
    #[test]
    fn the_sbom_referrer_is_an_oci_1_1_artifact_manifest_with_the_image_as_subject() {
        let r = sbom_referrer();
        let subject = golden();
        assert_eq!(
            String::from_utf8(r.manifest.clone()).unwrap(),
            format!(
                concat!(
                    r#"{{"artifactType":"application/vnd.cyclonedx+json","#,
                    r#""config":{{"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","mediaType":"application/vnd.oci.empty.v1+json","size":2}},"#,
                    r#""layers":[{{"annotations":{{"org.opencontainers.image.title":"sbom.cdx.json"}},"digest":"{sbom}","mediaType":"application/vnd.cyclonedx+json","size":{size}}}],"#,
                    r#""mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2,"#,
                    r#""subject":{{"digest":"{subject}","mediaType":"application/vnd.oci.image.manifest.v1+json","size":{subject_size}}}}}"#
                ),
                sbom = Digest::of(SBOM),
                size = SBOM.len(),
                subject = subject.manifest_digest,
                subject_size = subject.manifest.len(),
            )
        );
        assert_eq!(
            r.manifest_digest.as_str(),
            "sha256:38a71b1e2381c6e949d9837fca02cc663c5a6822fc8064a635d3d969fc8b083a"
        );
        assert_eq!(
            r.blobs().map(|(d, b)| (d.to_string(), b.len())),
            [
                (
                    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
                        .into(),
                    2
                ),
                (Digest::of(SBOM).to_string(), SBOM.len())
            ]
        );
        assert_eq!(
            String::from_utf8(canonical_json(&r.descriptor())).unwrap(),
            format!(
                r#"{{"artifactType":"application/vnd.cyclonedx+json","digest":"{}","mediaType":"application/vnd.oci.image.manifest.v1+json","size":{}}}"#,
                r.manifest_digest,
                r.manifest.len()
            )
        );
        assert_eq!(
            referrers_tag(&subject.manifest_digest),
            format!("sha256-{}", subject.manifest_digest.hex())
        );
    }

    #[test]
    fn the_referrers_tag_index_keeps_other_referrers_and_one_entry_per_digest() {
        let ours = sbom_referrer().descriptor();
        let new = merge_referrers_index(None, &ours).unwrap();
        assert_eq!(
            String::from_utf8(new.clone()).unwrap(),
            format!(
                r#"{{"manifests":[{}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}}"#,
                String::from_utf8(canonical_json(&ours)).unwrap()
            )
        );
        // Merging again changes nothing: the second push leaves one entry
        // and needs no PUT.
        assert_eq!(merge_referrers_index(Some(&new), &ours).unwrap(), new);

        // Another tool's signature stays, before ours; an older entry of
        // the same digest (say, without artifactType) is replaced in place.
        let other = r#"{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","mediaType":"application/vnd.oci.image.manifest.v1+json","size":7,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json","annotations":{"x":"y"}}"#;
        let stale = format!(
            r#"{{"digest":"{}","mediaType":"application/vnd.oci.image.manifest.v1+json","size":1}}"#,
            ours.digest()
        );
        let existing = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{stale},{other},{stale}]}}"#
        );
        let merged: serde_json::Value = serde_json::from_slice(
            &merge_referrers_index(Some(existing.as_bytes()), &ours).unwrap(),
        )
        .unwrap();
        let manifests = merged["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2, "{merged:#}");
        assert_eq!(manifests[0], serde_json::to_value(&ours).unwrap());
        assert_eq!(
            manifests[1],
            serde_json::from_str::<serde_json::Value>(other).unwrap()
        );

        for junk in [&b"not json"[..], br#"{"schemaVersion":2}"#] {
            assert!(matches!(
                merge_referrers_index(Some(junk), &ours),
                Err(OciError::BadReferrersIndex { .. })
            ));
        }
    }

    /// Pinned: a change here changes the image id of every nixpack image
    /// (on the classic store, the config digest is the id; on containerd
    /// and registries, the manifest digest is). Change only on purpose.
    #[test]
    fn golden_digests_never_change_unnoticed() {
        let image = golden();
        assert_eq!(
            image.config_digest.as_str(),
            "sha256:0f9daff56c1a7a2db0e1aae32c5bc8021972201c52f1e9e24039aa3762cad41f"
        );
        assert_eq!(
            image.manifest_digest.as_str(),
            "sha256:31fb8beb853993ce04e4c32aac2ac8f24d0a0c631a1fb62a8d5b1c18dee7ec1c"
        );
        insta::assert_snapshot!("config", String::from_utf8(image.config.clone()).unwrap());
        insta::assert_snapshot!(
            "manifest",
            String::from_utf8(image.manifest.clone()).unwrap()
        );
        let tag = ImageTag::from_ref(&ImageRef::parse("app").unwrap()).unwrap();
        insta::assert_snapshot!(
            "index",
            String::from_utf8(index_json(vec![image.index_entry(Some(&tag))])).unwrap()
        );
    }

    #[test]
    fn bytes_are_canonical_however_maps_iterate() {
        // oci-spec keeps labels, exposed ports and annotations in HashMaps,
        // whose order differs between processes and between maps; many
        // keys make an accidental sorted order unlikely.
        let image = golden();
        for _ in 0..20 {
            assert_eq!(golden(), image);
        }
        for bytes in [&image.config, &image.manifest] {
            // serde_json parses objects into a sorted map, so bytes that
            // survive a parse and re-serialisation unchanged are sorted
            // and compact.
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            assert_eq!(serde_json::to_vec(&v).unwrap(), *bytes);
            assert_eq!(canonical_json(&v), *bytes);
        }
        let labels = text_positions(&image.config, "org.example.label-");
        assert!(labels.windows(2).all(|w| w[0] < w[1]) && labels.len() == 20);
        let ports: Vec<_> = ["\"443/tcp\"", "\"53/udp\"", "\"8080/tcp\""]
            .iter()
            .map(|p| find(&image.config, p))
            .collect();
        assert!(ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");
    }

    fn find(hay: &[u8], needle: &str) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap_or_else(|| panic!("{needle} not found"))
    }

    fn text_positions(hay: &[u8], prefix: &str) -> Vec<usize> {
        (0..20)
            .map(|i| find(hay, &format!("{prefix}{i:02}\"")))
            .collect()
    }

    #[test]
    fn config_lists_diff_ids_and_manifest_lists_blobs() {
        let image = golden();
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&image.config).unwrap();
        let ids: Vec<String> = diff_ids().into_iter().map(|d| d.0).collect();
        assert_eq!(config.rootfs().diff_ids(), &ids);
        assert_eq!(config.created().as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(config.history().as_ref().unwrap().len(), 2);
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest.schema_version(), 2);
        assert_eq!(manifest.media_type(), &Some(MediaType::ImageManifest));
        assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
        assert_eq!(
            manifest.config().digest().to_string(),
            image.config_digest.as_str()
        );
        assert_eq!(manifest.config().size(), image.config.len() as u64);
        let sizes: Vec<_> = manifest.layers().iter().map(|l| l.size()).collect();
        assert_eq!(sizes, [1024, 2048]);
        assert!(manifest
            .layers()
            .iter()
            .all(|l| l.media_type() == &MediaType::ImageLayer));
    }

    #[test]
    fn a_compressed_layer_changes_the_manifest_not_the_config() {
        let plain = golden();
        let mut layers = plain.layers.clone();
        layers[1] = LayerBlob {
            digest: Digest::of(b"gzip bytes"),
            size: 10,
            media_type: MediaType::ImageLayerGzip,
            ..layers[1].clone()
        };
        let gz = Image::new(
            &recipe(),
            layers,
            &["store paths: glibc".into(), "store paths: app".into()],
            "amd64",
            1_700_000_000,
        );
        assert_eq!(gz.config_digest, plain.config_digest);
        assert_ne!(gz.manifest_digest, plain.manifest_digest);
        let text = String::from_utf8(gz.manifest).unwrap();
        assert!(text.contains("application/vnd.oci.image.layer.v1.tar+gzip"));
        assert!(text.contains(Digest::of(b"gzip bytes").as_str()));
    }

    #[test]
    fn an_image_read_back_and_recompressed_keeps_its_config_bytes() {
        let plain = golden();
        let back = Image::from_bytes(plain.config.clone(), plain.manifest.clone()).unwrap();
        assert_eq!(back, plain, "the bytes on disk are the image");

        let gz: Vec<LayerBlob> = plain
            .layers
            .iter()
            .map(|l| LayerBlob {
                digest: Digest::of(l.diff_id.0.as_bytes()),
                size: 7,
                media_type: MediaType::ImageLayerGzip,
                ..l.clone()
            })
            .collect();
        let pushed = back.with_layers(gz.clone()).unwrap();
        assert_eq!(pushed.config, plain.config);
        assert_eq!(pushed.config_digest, plain.config_digest);
        assert_eq!(
            pushed.manifest,
            manifest_json(&plain.config_digest, plain.config.len() as u64, &gz)
        );
        assert_eq!(pushed.manifest_digest, Digest::of(&pushed.manifest));

        // Layers of another image are refused, and so is a manifest that
        // names another config.
        let mut wrong = gz.clone();
        wrong.swap(0, 1);
        assert!(matches!(
            back.with_layers(wrong),
            Err(OciError::BadImage { .. })
        ));
        assert!(matches!(
            back.with_layers(gz[..1].to_vec()),
            Err(OciError::LayerCount { .. })
        ));
        let mut other_config = plain.config.clone();
        other_config.push(b' ');
        assert!(matches!(
            Image::from_bytes(other_config, plain.manifest.clone()),
            Err(OciError::DigestMismatch { .. })
        ));
        assert!(matches!(
            Image::from_bytes(plain.config.clone(), b"{}".to_vec()),
            Err(OciError::BadImage { .. })
        ));
    }

    #[test]
    fn names_normalise_like_the_engine() {
        let norm = |r: &str| ImageTag::from_ref(&ImageRef::parse(r).unwrap()).unwrap();
        for (written, full, repo_tag) in [
            ("x:latest", "docker.io/library/x:latest", "x:latest"),
            ("x", "docker.io/library/x:latest", "x:latest"),
            ("team/app:1.0", "docker.io/team/app:1.0", "team/app:1.0"),
            ("docker.io/x:2", "docker.io/library/x:2", "docker.io/x:2"),
            (
                "index.docker.io/a/b",
                "docker.io/a/b:latest",
                "index.docker.io/a/b:latest",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/a/b:t",
                "localhost:5000/a/b:t",
                "localhost:5000/a/b:t",
            ),
            ("ghcr.io/o/app:v1", "ghcr.io/o/app:v1", "ghcr.io/o/app:v1"),
        ] {
            let t = norm(written);
            assert_eq!(t.normalized(), full, "{written}");
            assert_eq!(t.repo_tag(), repo_tag, "{written}");
        }
        let pinned = format!("x@sha256:{}", "0".repeat(64));
        assert!(matches!(
            ImageTag::from_ref(&ImageRef::parse(&pinned).unwrap()),
            Err(OciError::DigestReference { .. })
        ));
    }

    #[test]
    fn digests_parse_only_sha256_hex() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&ok).unwrap().hex(), "a".repeat(64));
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            Digest::of_reader(&b"layer a"[..]).unwrap(),
            Digest::of(b"layer a")
        );
    }

    // -- sinks ---------------------------------------------------------

    /// Real layer tars on disk, and the image over them.
    fn layer_image(dir: &Path, notes: &[&str]) -> (Image, Vec<PathBuf>) {
        let files: Vec<PathBuf> = notes
            .iter()
            .enumerate()
            .map(|(i, note)| {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = header(note.len() as u64, 0o644, tar::EntryType::Regular);
                b.append_data(&mut h, format!("file-{i}"), note.as_bytes())
                    .unwrap();
                let path = dir.join(format!("layer-{i}.tar"));
                std::fs::write(&path, b.into_inner().unwrap()).unwrap();
                path
            })
            .collect();
        let layers = files
            .iter()
            .map(|f| {
                let d = crate::archive::diff_id(std::fs::File::open(f).unwrap()).unwrap();
                LayerBlob::uncompressed(d, std::fs::metadata(f).unwrap().len())
            })
            .collect();
        let history: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
        let recipe = Recipe {
            entrypoint: Some(vec!["/file-0".into()]),
            ..Default::default()
        };
        (Image::new(&recipe, layers, &history, "amd64", 1), files)
    }

    fn app_tag(r: &str) -> ImageTag {
        ImageTag::from_ref(&ImageRef::parse(r).unwrap()).unwrap()
    }

    /// Entries of a tar as (path, header, bytes), in order.
    fn read_tar(bytes: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, e.header().clone(), data)
            })
            .collect()
    }

    /// The shape rules of the OCI image layout spec, on a map of paths to
    /// bytes: an `oci-layout` of version 1.0.0, an `index.json` that is an
    /// image index, and blobs named by their sha256 that every descriptor
    /// reachable from the index points at with the right size.
    fn assert_valid_layout(files: &BTreeMap<String, Vec<u8>>) {
        let layout: serde_json::Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
        assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
        for (path, bytes) in files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(
                    Digest::of(bytes).hex(),
                    hex,
                    "{path} is named by its sha256"
                );
            }
        }
        let blob = |d: &Descriptor| {
            let bytes = files
                .get(&format!("blobs/sha256/{}", d.digest().digest()))
                .unwrap_or_else(|| panic!("{} is in blobs/", d.digest()));
            assert_eq!(bytes.len() as u64, d.size(), "size of {}", d.digest());
            bytes
        };
        let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index.schema_version(), 2);
        assert!(!index.manifests().is_empty());
        for m in index.manifests() {
            assert_eq!(m.media_type(), &MediaType::ImageManifest);
            let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(blob(m)).unwrap();
            let config: oci_spec::image::ImageConfiguration =
                serde_json::from_slice(blob(manifest.config())).unwrap();
            for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
                // Uncompressed: the blob's sha256 is also its DiffID.
                assert_eq!(&Digest::of(blob(layer)).0, diff_id);
            }
            assert_eq!(manifest.layers().len(), config.rootfs().diff_ids().len());
        }
    }

    #[test]
    fn engine_archive_is_a_layout_plus_manifest_json() {
        let tmp = tempfile::tempdir().unwrap();
        let (image, files) = layer_image(tmp.path(), &["base", "app"]);
        let tags = [app_tag("app:1"), app_tag("localhost:5000/team/app")];
        let mut tar = tar::Builder::new(Vec::new());
        write_engine_archive(&mut tar, &image, &files, &tags).unwrap();
        let bytes = tar.into_inner().unwrap();
        let entries = read_tar(&bytes);

        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let blob = |d: &Digest| d.blob_path();
        let expected = [
            "oci-layout".to_owned(),
            "blobs/".into(),
            "blobs/sha256/".into(),
            blob(&image.layers[0].digest),
            blob(&image.layers[1].digest),
            blob(&image.config_digest),
            blob(&image.manifest_digest),
            "index.json".into(),
            "manifest.json".into(),
        ];
        assert_eq!(paths, expected);
        for (path, h, data) in &entries {
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
            assert_eq!(h.mtime().unwrap(), ENTRY_MTIME, "{path}");
            let dir = path.ends_with('/');
            assert_eq!(h.entry_type().is_dir(), dir, "{path}");
            assert_eq!(h.mode().unwrap(), if dir { 0o755 } else { 0o644 }, "{path}");
            assert_eq!(h.size().unwrap(), data.len() as u64, "{path}");
        }
        let files_in: BTreeMap<String, Vec<u8>> = entries
            .iter()
            .filter(|e| !e.0.ends_with('/'))
            .map(|e| (e.0.clone(), e.2.clone()))
            .collect();
        assert_valid_layout(&files_in);

        let index: ImageIndex = serde_json::from_slice(&files_in["index.json"]).unwrap();
        let names: Vec<_> = index
            .manifests()
            .iter()
            .map(|m| {
                let a = m.annotations().as_ref().unwrap();
                (
                    a[ANNOTATION_REF_NAME].as_str(),
                    a[ANNOTATION_CONTAINERD_NAME].as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("1", "docker.io/library/app:1"),
                ("latest", "localhost:5000/team/app:latest")
            ]
        );

        let docker: serde_json::Value = serde_json::from_slice(&files_in["manifest.json"]).unwrap();
        assert_eq!(
            docker,
            serde_json::json!([{
                "Config": blob(&image.config_digest),
                "RepoTags": ["app:1", "localhost:5000/team/app:latest"],
                "Layers": [blob(&image.layers[0].digest), blob(&image.layers[1].digest)],
            }])
        );
        for path in docker[0]["Layers"].as_array().unwrap() {
            assert!(files_in.contains_key(path.as_str().unwrap()));
        }

        // The same inputs, the same archive.
        let mut again = tar::Builder::new(Vec::new());
        write_engine_archive(&mut again, &image, &files, &tags).unwrap();
        assert_eq!(again.into_inner().unwrap(), bytes);
    }

    #[test]
    fn untagged_engine_archive_has_null_repo_tags_and_a_bare_index_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let (image, files) = layer_image(tmp.path(), &["only"]);
        let mut tar = tar::Builder::new(Vec::new());
        write_engine_archive(&mut tar, &image, &files, &[]).unwrap();
        let entries = read_tar(&tar.into_inner().unwrap());
        let get = |p: &str| &entries.iter().find(|e| e.0 == p).unwrap().2;
        let docker: serde_json::Value = serde_json::from_slice(get("manifest.json")).unwrap();
        assert!(docker[0]["RepoTags"].is_null());
        let index: ImageIndex = serde_json::from_slice(get("index.json")).unwrap();
        assert_eq!(index.manifests().len(), 1);
        assert!(index.manifests()[0].annotations().is_none());
    }

    #[test]
    fn a_layer_file_of_the_wrong_size_is_refused_before_its_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let (image, files) = layer_image(tmp.path(), &["a"]);
        std::fs::write(&files[0], b"shorter").unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let err = write_engine_archive(&mut tar, &image, &files, &[]).unwrap_err();
        let inner = err.into_inner().unwrap().downcast::<OciError>().unwrap();
        assert!(matches!(*inner, OciError::SizeMismatch { found: 7, .. }));
        let mut tar = tar::Builder::new(Vec::new());
        let err = write_engine_archive(&mut tar, &image, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("1 layers but 0 layer files"));
    }

    #[test]
    fn layout_archive_is_the_layout_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let (image, files) = layer_image(tmp.path(), &["a", "b"]);
        let mut tar = tar::Builder::new(Vec::new());
        write_layout_archive(&mut tar, &image, &files, &app_tag("app:v1")).unwrap();
        let entries = read_tar(&tar.into_inner().unwrap());
        assert!(!entries.iter().any(|e| e.0 == "manifest.json"));
        let tree: BTreeMap<_, _> = entries
            .into_iter()
            .filter(|e| !e.0.ends_with('/'))
            .map(|e| (e.0, e.2))
            .collect();
        assert_valid_layout(&tree);
    }

    fn read_dir_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    fn ref_names(dir: &Path) -> Vec<(String, Digest)> {
        let index: ImageIndex =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        index
            .manifests()
            .iter()
            .map(|m| {
                (
                    m.annotations().as_ref().unwrap()[ANNOTATION_REF_NAME].clone(),
                    Digest::parse(m.digest().as_ref()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn layout_dir_merges_tags_and_replaces_the_same_one() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout");
        let (one, files_one) = layer_image(tmp.path(), &["base", "v1"]);
        write_layout_dir(&out, &one, &files_one, &app_tag("app:1"), &[]).unwrap();
        assert_valid_layout(&read_dir_tree(&out));

        let other = tempfile::tempdir().unwrap();
        let (two, files_two) = layer_image(other.path(), &["base", "v2"]);
        write_layout_dir(&out, &two, &files_two, &app_tag("app:2"), &[]).unwrap();
        // Rebuilding tag 1 as image two replaces its entry in place.
        write_layout_dir(&out, &two, &files_two, &app_tag("app:1"), &[]).unwrap();
        assert_eq!(
            ref_names(&out),
            [
                ("1".to_owned(), two.manifest_digest.clone()),
                ("2".to_owned(), two.manifest_digest.clone())
            ]
        );
        let tree = read_dir_tree(&out);
        assert_valid_layout(&tree);
        // The shared base layer is stored once; no temporary file is left.
        let blobs = tree.keys().filter(|k| k.starts_with("blobs/")).count();
        assert_eq!(
            blobs,
            1 + 2 + 2 * 2,
            "base, v1, v2 + two configs and manifests"
        );
        assert!(tree
            .keys()
            .all(|k| k == "oci-layout" || k == "index.json" || k.starts_with("blobs/sha256/")));
    }

    #[test]
    fn layout_dir_lists_the_sbom_beside_its_image_and_drops_it_with_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout");
        let (one, files_one) = layer_image(tmp.path(), &["base", "v1"]);
        let sbom_of = |image: &Image, text: &str| {
            Referrer::sbom(
                text.as_bytes().to_vec(),
                "sbom.cdx.json",
                image.index_entry(None),
            )
        };
        let r1 = sbom_of(&one, "sbom one");
        write_layout_dir(
            &out,
            &one,
            &files_one,
            &app_tag("app:1"),
            std::slice::from_ref(&r1),
        )
        .unwrap();
        // Written twice: still one entry.
        write_layout_dir(
            &out,
            &one,
            &files_one,
            &app_tag("app:1"),
            std::slice::from_ref(&r1),
        )
        .unwrap();
        let entries = |out: &Path| -> Vec<(Option<String>, Option<String>, String)> {
            let index: ImageIndex =
                serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
            index
                .manifests()
                .iter()
                .map(|m| {
                    (
                        m.annotations()
                            .as_ref()
                            .and_then(|a| a.get(ANNOTATION_REF_NAME).cloned()),
                        m.artifact_type().as_ref().map(|t| t.to_string()),
                        m.digest().to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(
            entries(&out),
            [
                (Some("1".into()), None, one.manifest_digest.to_string()),
                (
                    None,
                    Some(CYCLONEDX_MEDIA_TYPE.into()),
                    r1.manifest_digest.to_string()
                )
            ]
        );
        let tree = read_dir_tree(&out);
        assert_eq!(tree[&r1.blob_digest.blob_path()], b"sbom one");
        assert_eq!(tree[&r1.manifest_digest.blob_path()], r1.manifest);

        // Tag 1 rebuilt as another image: its old SBOM leaves the index.
        let other = tempfile::tempdir().unwrap();
        let (two, files_two) = layer_image(other.path(), &["base", "v2"]);
        let r2 = sbom_of(&two, "sbom two");
        write_layout_dir(
            &out,
            &two,
            &files_two,
            &app_tag("app:1"),
            std::slice::from_ref(&r2),
        )
        .unwrap();
        assert_eq!(
            entries(&out),
            [
                (Some("1".into()), None, two.manifest_digest.to_string()),
                (
                    None,
                    Some(CYCLONEDX_MEDIA_TYPE.into()),
                    r2.manifest_digest.to_string()
                )
            ]
        );
    }

    #[test]
    fn layout_dir_keeps_a_present_blob_and_refuses_a_wrong_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout");
        let (image, files) = layer_image(tmp.path(), &["a"]);
        write_layout_dir(&out, &image, &files, &app_tag("app"), &[]).unwrap();
        let blob = out.join(image.layers[0].digest.blob_path());
        let before = std::fs::metadata(&blob).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_layout_dir(&out, &image, &files, &app_tag("app"), &[]).unwrap();
        assert_eq!(
            std::fs::metadata(&blob).unwrap().modified().unwrap(),
            before
        );
        // A stored layer is not read again: its file may be gone.
        let kept = std::fs::read(&files[0]).unwrap();
        std::fs::remove_file(&files[0]).unwrap();
        write_layout_dir(&out, &image, &files, &app_tag("app:again"), &[]).unwrap();
        std::fs::write(&files[0], kept).unwrap();

        // Same size, other bytes: caught by the digest, nothing is stored.
        let elsewhere = tempfile::tempdir().unwrap();
        let (other, _) = layer_image(elsewhere.path(), &["b"]);
        std::fs::remove_dir_all(&out).unwrap();
        let err = write_layout_dir(&out, &other, &files, &app_tag("app"), &[]).unwrap_err();
        assert!(
            matches!(&err, OciError::DigestMismatch { expected, .. } if *expected == other.layers[0].digest),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(out.join("blobs/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn layout_dir_refuses_an_index_that_is_not_one() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("index.json"), b"{\"not\":1}").unwrap();
        let (image, files) = layer_image(tmp.path(), &["a"]);
        let err = write_layout_dir(&out, &image, &files, &app_tag("app"), &[]).unwrap_err();
        assert!(matches!(err, OciError::BadIndex { .. }), "{err}");
    }
}

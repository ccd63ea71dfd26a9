//! Layer planning: which store paths go into which image layer.
//!
//! A pure function of the closure and a layer budget `N` (`layers = N`,
//! at most [`crate::manifest::MAX_LAYERS`]). The root conventions get one
//! more small layer on top, made by nixpack itself.
//!
//! # The algorithm
//!
//! It follows the popularity ordering of nixpkgs' layered images: a path
//! that many other paths depend on (a libc, an interpreter) is shared
//! widely and changes rarely, so it belongs low in the stack in a layer of
//! its own, where the engine and registries can share it between images.
//!
//! 1. **Popularity** of a path = how many paths of the closure depend on
//!    it, directly or not. Ties go to the larger path, then the name.
//! 2. **The result** always gets the top layer of its own: it is what
//!    changes on every edit of the project.
//! 3. The `N - 2` most popular other paths get one layer each, most popular
//!    at the bottom.
//! 4. Everything left — the least popular paths, typically used only by the
//!    result and so the likeliest to change with it — shares one layer just
//!    under the result.
//!
//! With `N` at least the number of paths, every path has its own layer.
//!
//! ## Worked example
//!
//! The example's closure, `N = 3`:
//!
//! ```text
//! python-http ──► zlib ──► glibc      popularity: glibc 3, zlib 1,
//!      │ └──────► expat ──►  ▲                    expat 1, python-http 0
//!      └─────────────────────┘
//! ```
//!
//! Layer 0 = `glibc` (most popular). One own layer left for `N - 2 = 1`
//! path, so layer 1 = `zlib` + `expat`, and layer 2 = `python-http`. A new
//! build of the project re-creates only layer 2; a glibc update re-creates
//! everything above it, as it must (every path above refers to it).
//!
//! # Layer identity
//!
//! A layer is named by a content key: the sha256 of its sorted store
//! paths. Store paths are immutable, so the same key means the same bytes,
//! and a layer tarball already on disk is never written again.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::closure::{hex, Closure, StorePath};

/// One planned layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Store paths in it, sorted.
    pub paths: Vec<StorePath>,
    /// Sum of their NAR sizes.
    pub nar_size: u64,
}

impl Layer {
    /// Content key: hex sha256 of the sorted store paths, one per line.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.paths {
            h.update(p.as_str().as_bytes());
            h.update(b"\n");
        }
        hex(&h.finalize())
    }

    /// The tarball's file name: `layer-<first 20 hex of the key>.tar`.
    pub fn file_name(&self) -> String {
        format!("layer-{}.tar", &self.key()[..20])
    }
}

/// Plans at most `max_layers` layers (at least 1), bottom first.
pub fn plan(closure: &Closure, max_layers: u16) -> Vec<Layer> {
    let max_layers = usize::from(max_layers.max(1));
    let dependents = closure.dependents();
    let mut others: Vec<&StorePath> = closure
        .paths
        .keys()
        .filter(|p| **p != closure.result)
        .collect();
    others.sort_by(|a, b| {
        let (pa, pb) = (dependents[a].len(), dependents[b].len());
        pb.cmp(&pa)
            .then_with(|| closure.paths[*b].nar_size.cmp(&closure.paths[*a].nar_size))
            .then_with(|| a.cmp(b))
    });

    let layer = |paths: Vec<&StorePath>| {
        let mut paths: Vec<StorePath> = paths.into_iter().cloned().collect();
        paths.sort();
        let nar_size = paths.iter().map(|p| closure.paths[p].nar_size).sum();
        Layer { paths, nar_size }
    };

    let mut layers = Vec::new();
    if max_layers == 1 {
        let mut all: Vec<&StorePath> = others;
        all.push(&closure.result);
        return vec![layer(all)];
    }
    // Own layers for the most popular; the rest share one, then the result.
    let own = if others.len() < max_layers {
        others.len()
    } else {
        max_layers - 2
    };
    let (singles, rest) = others.split_at(own);
    layers.extend(singles.iter().map(|p| layer(vec![*p])));
    if !rest.is_empty() {
        layers.push(layer(rest.to_vec()));
    }
    layers.push(layer(vec![&closure.result]));
    layers
}

/// Which layer (index) each store path landed in.
pub fn index(layers: &[Layer]) -> BTreeMap<&StorePath, usize> {
    layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.paths.iter().map(move |p| (p, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> Closure {
        Closure::from_json(include_str!("../tests/golden/python-closure.json")).unwrap()
    }

    fn names(layers: &[Layer]) -> Vec<Vec<&str>> {
        layers
            .iter()
            .map(|l| l.paths.iter().map(StorePath::name).collect())
            .collect()
    }

    #[test]
    fn worked_example_from_the_module_doc() {
        assert_eq!(
            names(&plan(&golden(), 3)),
            vec![
                vec!["glibc-2.36"],
                vec!["zlib-1.2.13", "expat-2.5.0"],
                vec!["python-http"]
            ]
        );
    }

    #[test]
    fn enough_budget_gives_every_path_its_own_layer() {
        let layers = plan(&golden(), 40);
        assert_eq!(
            names(&layers),
            vec![
                vec!["glibc-2.36"],
                vec!["expat-2.5.0"],
                vec!["zlib-1.2.13"],
                vec!["python-http"]
            ]
        );
    }

    #[test]
    fn one_layer_holds_everything() {
        let layers = plan(&golden(), 1);
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].paths.len(), 4);
        assert_eq!(layers[0].nar_size, golden().nar_size());
    }

    #[test]
    fn same_closure_same_plan_and_keys() {
        let a: Vec<String> = plan(&golden(), 3).iter().map(Layer::file_name).collect();
        let b: Vec<String> = plan(&golden(), 3).iter().map(Layer::file_name).collect();
        assert_eq!(a, b);
        assert!(a
            .iter()
            .all(|f| f.starts_with("layer-") && f.ends_with(".tar")));
    }
}

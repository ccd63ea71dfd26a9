//! Layer planning: which store paths go into which image layer.
//!
//! A pure function of the closure and a layer budget `N` (`layers = N`,
//! at most [`crate::manifest::MAX_LAYERS`]). The root conventions get one
//! more small layer on top, made by nixpack itself.
//!
//! # What a good plan does
//!
//! When a store path `x` changes, every path that depends on `x` changes
//! with it (their hashes include `x`'s). Call that set `C(x)`. Every layer
//! holding a path of `C(x)` must be written again; the rest of those layers
//! is waste. So the cost of a plan is, averaged over which path changes,
//!
//! ```text
//!            bytes of the layers that touch C(x)
//! ratio(x) = -----------------------------------      (1.0 is perfect)
//!                      bytes of C(x)
//! ```
//!
//! With a path per layer every ratio is 1.0; the budget forces sharing,
//! and the question is who shares with whom.
//!
//! # The algorithm
//!
//! The popularity ordering of nixpkgs' layered images (own layers for the
//! most depended-upon paths, everything else in one layer) is the known
//! starting point, kept as [`plan_popularity`]. It isolates the base but
//! lumps all the leaves together, so changing one small leaf re-creates all
//! of them. [`plan`] instead minimises the cost above directly:
//!
//! 1. **The result** gets the top layer alone: every change touches it.
//! 2. **Widely shared, large paths** keep a layer of their own (required by
//!    at least half the closure, at least `1/(2N)` of its bytes; at most a
//!    quarter of the budget): images built on the same libc share it.
//! 3. Every other path starts in a group of its own. A group `G` is touched
//!    by the changes of `T(G)` = its paths and everything they depend on.
//!    Its cost is `bytes(G) × W(T(G))`, where `W(S) = Σ_{x∈S} w(x)` and
//!    `w(x) = 1 / (bytes(C(x)) × pop(x)³)`: the ratio of a change of `x`,
//!    weighted by how likely `x` is to change — the fewer paths are built
//!    on it (`pop(x)` counts them, `x` included), the likelier (an
//!    application's code is edited more often than libc). The cube was
//!    chosen on a benchmark-shaped closure: it brings the mean leaf-change
//!    ratio to 1.44 while library changes stay near 4 (square: 1.50 and
//!    2.8; the popularity plan: thousands for both).
//! 4. **Greedy merging**: while there are more groups than the budget,
//!    merge the two whose merge adds the least cost,
//!    `bytes(A) × W(T(B) ∖ T(A)) + bytes(B) × W(T(A) ∖ T(B))`. So paths that
//!    change together merge first (a library and what only it uses),
//!    widely used paths — whose changes drag much along anyway — merge
//!    cheaply with each other, and small likely-to-change leaves stay
//!    alone. Ties go to the earlier pair in store-path order.
//! 5. **Order**: groups touched by fewer changes lie lower (the base at the
//!    bottom, the leaves near the top), then the result.
//!
//! Closures of more than [`PREMERGE`] paths are first cut down to that
//! many groups by popularity order, keeping the greedy step cheap.
//!
//! ## Worked example
//!
//! The example's closure (sizes in KiB), `N = 3`:
//!
//! ```text
//! python-http ──► zlib (121) ──► glibc (5 211)       result: python-http
//! (25 116)    ──► expat (404) ──►  ▲
//!             └────────────────────┘
//! ```
//!
//! glibc is required by all 4 paths and holds 5 211 of 30 852 KiB (more
//! than 1/(2·3)): it is pinned to a layer of its own. One group is left for
//! zlib and expat, so they share it: layer 0 = glibc, layer 1 = zlib +
//! expat, layer 2 = python-http. Without the pin the costs would agree:
//! `C(zlib)` = zlib + python-http (25 237 KiB, pop 2), `C(expat)` = expat +
//! python-http (25 520, pop 2), and
//!
//! - glibc + zlib: 5 211 × 1/(25 237·8) = 0.026
//! - zlib + expat: 121 × 1/(25 520·8) + 404 × 1/(25 237·8) = 0.003
//!
//! A new build of the project re-creates only layer 2; a change of zlib
//! re-creates layers 1 and 2; a glibc update re-creates everything, as it
//! must (every path refers to it).
//!
//! # Layer identity
//!
//! A layer is named by a content key: the sha256 of nixpack's tar format
//! version and its sorted store paths with their NAR hashes. The same key
//! means the same bytes, so a layer tarball already on disk is never
//! written again — and a path rebuilt with other bytes under the same name
//! (possible without the sandbox) gets a new layer, never a stale one.

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
    key: String,
}

impl Layer {
    /// The layer of `paths` (any order) of `closure`.
    pub fn new(closure: &Closure, mut paths: Vec<StorePath>) -> Layer {
        paths.sort();
        let mut h = Sha256::new();
        h.update(format!(
            "nixpack layer tar v{}\n",
            crate::layer_tar::TAR_FORMAT_VERSION
        ));
        for p in &paths {
            h.update(format!("{p} {}\n", closure.paths[p].nar_hash));
        }
        Layer {
            nar_size: paths.iter().map(|p| closure.paths[p].nar_size).sum(),
            paths,
            key: hex(&h.finalize()),
        }
    }

    /// Content key: hex sha256 of the tar format version and the sorted
    /// store paths with their NAR hashes.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The tarball's file name: `layer-<first 20 hex of the key>.tar`.
    pub fn file_name(&self) -> String {
        format!("layer-{}.tar", &self.key()[..20])
    }
}

/// The popularity plan of nixpkgs' layered images (the baseline): the
/// `N - 2` most depended-upon paths alone, the rest together, the result
/// on top.
pub fn plan_popularity(closure: &Closure, max_layers: u16) -> Vec<Layer> {
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

    let layer = |paths: Vec<&StorePath>| Layer::new(closure, paths.into_iter().cloned().collect());

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

/// Closures are cut down to this many groups before greedy merging.
pub const PREMERGE: usize = 320;

/// A set of closure paths by index.
#[derive(Clone, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
    /// Σ weight[i] for i in self ∖ other.
    fn weight_minus(&self, other: &Bits, weight: &[f64]) -> f64 {
        let mut sum = 0.0;
        for (k, (a, b)) in self.0.iter().zip(&other.0).enumerate() {
            let mut w = a & !b;
            while w != 0 {
                sum += weight[k * 64 + w.trailing_zeros() as usize];
                w &= w - 1;
            }
        }
        sum
    }
}

struct Group {
    members: Vec<usize>,
    bytes: u64,
    touched_by: Bits,
}

/// Plans at most `max_layers` layers (at least 1), bottom first; see the
/// module documentation.
pub fn plan(closure: &Closure, max_layers: u16) -> Vec<Layer> {
    let max_layers = usize::from(max_layers.max(1));
    let paths: Vec<&StorePath> = closure.paths.keys().collect();
    let n = paths.len();
    let index: BTreeMap<&StorePath, usize> =
        paths.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let bytes: Vec<u64> = paths.iter().map(|p| closure.paths[*p].nar_size).collect();
    let result = index[&closure.result];
    let layer = |members: &[usize]| {
        Layer::new(closure, members.iter().map(|i| paths[*i].clone()).collect())
    };
    if max_layers == 1 {
        return vec![layer(&(0..n).collect::<Vec<_>>())];
    }

    // requires[y] = y and everything y depends on: a depth-first walk
    // with its own stack (closures can be chains thousands of paths deep),
    // each path filled after everything it refers to.
    let mut requires: Vec<Option<Bits>> = vec![None; n];
    let refs = |i: usize| {
        closure.paths[paths[i]]
            .references
            .iter()
            .map(|r| index[r])
            .filter(move |j| *j != i)
    };
    let mut entered = vec![false; n];
    for start in 0..n {
        let mut stack = vec![(start, false)];
        while let Some((i, children_done)) = stack.pop() {
            if children_done {
                let mut b = Bits::new(n);
                b.set(i);
                // A reference still being walked is a cycle (not in a
                // real store): it contributes what it has so far, nothing.
                for j in refs(i) {
                    if let Some(r) = &requires[j] {
                        b.union(r);
                    }
                }
                requires[i] = Some(b);
            } else if !entered[i] {
                entered[i] = true;
                stack.push((i, true));
                stack.extend(refs(i).filter(|j| !entered[*j]).map(|j| (j, false)));
            }
        }
    }
    let requires: Vec<Bits> = requires.into_iter().map(|b| b.expect("filled")).collect();
    // bytes(C(x)): x and every path that requires it.
    let mut changed = vec![0u64; n];
    for (y, req) in requires.iter().enumerate() {
        for (k, word) in req.0.iter().enumerate() {
            let mut w = *word;
            while w != 0 {
                changed[k * 64 + w.trailing_zeros() as usize] += bytes[y];
                w &= w - 1;
            }
        }
    }
    // How many paths require each path (its popularity, itself included).
    let mut popularity = vec![0u32; n];
    for req in &requires {
        for (k, word) in req.0.iter().enumerate() {
            let mut w = *word;
            while w != 0 {
                popularity[k * 64 + w.trailing_zeros() as usize] += 1;
                w &= w - 1;
            }
        }
    }
    // A change of x costs its ratio; x changes the likelier the fewer paths
    // are built on it (a leaf is edited more often than libc).
    let weight: Vec<f64> = (0..n)
        .map(|x| 1.0 / (changed[x].max(1) as f64 * f64::from(popularity[x]).powi(3)))
        .collect();

    // Widely shared, large paths keep layers of their own: between images
    // built on them (and in registries) such a layer is stored once.
    let total: u64 = bytes.iter().sum();
    let mut pinned: Vec<usize> = (0..n)
        .filter(|x| {
            *x != result
                && 2 * popularity[*x] as usize >= n
                && bytes[*x] * 2 * max_layers as u64 >= total
        })
        .collect();
    pinned.sort_by(|a, b| bytes[*b].cmp(&bytes[*a]).then(a.cmp(b)));
    pinned.truncate((max_layers - 1) / 4);

    let mut groups: Vec<Group> = Vec::new();
    let mut singles: Vec<usize> = (0..n)
        .filter(|i| *i != result && !pinned.contains(i))
        .collect();
    if singles.len() > PREMERGE {
        // Popularity order, then contiguous runs of equal count.
        singles.sort_by(|a, b| {
            popularity[*b]
                .cmp(&popularity[*a])
                .then(bytes[*b].cmp(&bytes[*a]))
                .then(a.cmp(b))
        });
        let per = singles.len().div_ceil(PREMERGE);
        for chunk in singles.chunks(per) {
            groups.push(group(chunk.to_vec(), &bytes, &requires, n));
        }
    } else {
        groups.extend(
            singles
                .into_iter()
                .map(|i| group(vec![i], &bytes, &requires, n)),
        );
    }

    let budget = max_layers - 1 - pinned.len();
    let merge_cost = |a: &Group, b: &Group| {
        a.bytes as f64 * b.touched_by.weight_minus(&a.touched_by, &weight)
            + b.bytes as f64 * a.touched_by.weight_minus(&b.touched_by, &weight)
    };
    if groups.len() > budget {
        // cost[i][j] for i < j, kept up to date as groups merge.
        let mut cost: Vec<Vec<f64>> = (0..groups.len())
            .map(|i| {
                (0..groups.len())
                    .map(|j| {
                        if j > i {
                            merge_cost(&groups[i], &groups[j])
                        } else {
                            f64::INFINITY
                        }
                    })
                    .collect()
            })
            .collect();
        let mut alive: Vec<bool> = vec![true; groups.len()];
        let mut live = groups.len();
        while live > budget {
            let mut best = (f64::INFINITY, 0, 0);
            for i in 0..groups.len() {
                if !alive[i] {
                    continue;
                }
                for j in i + 1..groups.len() {
                    if alive[j] && cost[i][j] < best.0 {
                        best = (cost[i][j], i, j);
                    }
                }
            }
            let (_, i, j) = best;
            let absorbed = std::mem::replace(
                &mut groups[j],
                Group {
                    members: vec![],
                    bytes: 0,
                    touched_by: Bits::new(0),
                },
            );
            groups[i].members.extend(absorbed.members);
            groups[i].bytes += absorbed.bytes;
            groups[i].touched_by.union(&absorbed.touched_by);
            alive[j] = false;
            live -= 1;
            for (k, _) in alive.iter().enumerate().filter(|(k, a)| **a && *k != i) {
                let (lo, hi) = if k < i { (k, i) } else { (i, k) };
                cost[lo][hi] = merge_cost(&groups[lo], &groups[hi]);
            }
        }
        groups = groups
            .into_iter()
            .zip(alive)
            .filter_map(|(g, a)| a.then_some(g))
            .collect();
    }
    groups.extend(
        pinned
            .into_iter()
            .map(|p| group(vec![p], &bytes, &requires, n)),
    );
    for g in &mut groups {
        g.members.sort();
    }
    groups.sort_by(|a, b| {
        a.touched_by
            .count()
            .cmp(&b.touched_by.count())
            .then(a.members[0].cmp(&b.members[0]))
    });
    let mut layers: Vec<Layer> = groups.iter().map(|g| layer(&g.members)).collect();
    layers.push(layer(&[result]));
    layers
}

fn group(members: Vec<usize>, bytes: &[u64], requires: &[Bits], n: usize) -> Group {
    let mut touched_by = Bits::new(n);
    for m in &members {
        touched_by.union(&requires[*m]);
    }
    Group {
        bytes: members.iter().map(|m| bytes[*m]).sum(),
        members,
        touched_by,
    }
}

/// For a change of `path`: bytes of the layers that must be written again
/// and bytes of the store paths that change (`path` and its dependents).
pub fn change_cost(closure: &Closure, layers: &[Layer], path: &StorePath) -> (u64, u64) {
    let dependents = closure.dependents();
    let mut changed: Vec<&StorePath> = dependents[path].iter().copied().collect();
    changed.push(path);
    let changed_bytes = changed.iter().map(|p| closure.paths[*p].nar_size).sum();
    let at = index(layers);
    let touched: std::collections::BTreeSet<usize> = changed.iter().map(|p| at[*p]).collect();
    (
        touched.iter().map(|i| layers[*i].nar_size).sum(),
        changed_bytes,
    )
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
pub(crate) mod tests {
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
                vec!["zlib-1.2.13"],
                vec!["expat-2.5.0"],
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

    /// A closure shaped like the benchmark's: one base, `libs` libraries on
    /// the base and up to three lower libraries, `leaves` leaves on 2–5
    /// libraries, and a result on every leaf. Sizes vary over two orders.
    pub(crate) fn synthetic(libs: usize, leaves: usize) -> Closure {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let name = |i: usize, kind: &str| {
            format!(
                "/nix/store/{:0>32}-{kind}{i}",
                format!("{:x}", i).replace(['e', 't', 'u'], "a")
            )
        };
        let mut nodes: Vec<(String, u64, Vec<String>)> = vec![(name(0, "base"), 300 << 20, vec![])];
        for i in 0..libs {
            let mut refs = vec![nodes[0].0.clone()];
            for _ in 0..rand(4) {
                if i > 0 {
                    refs.push(nodes[1 + rand(i as u64) as usize].0.clone());
                }
            }
            nodes.push((name(1 + i, "lib"), (1 + rand(100).pow(2)) << 12, refs));
        }
        for i in 0..leaves {
            let refs = (0..2 + rand(4))
                .map(|_| nodes[1 + rand(libs as u64) as usize].0.clone())
                .collect();
            nodes.push((
                name(1 + libs + i, "leaf"),
                (1 + rand(100).pow(2)) << 12,
                refs,
            ));
        }
        let leaf_names: Vec<String> = nodes[1 + libs..].iter().map(|n| n.0.clone()).collect();
        let result = name(1 + libs + leaves, "result");
        nodes.push((result.clone(), 4096, leaf_names));
        let paths: Vec<String> = nodes
            .iter()
            .map(|(p, size, refs)| {
                let refs: Vec<String> = refs.iter().map(|r| format!("{r:?}")).collect();
                // A made-up NAR hash: planning never reads it.
                let nar_hash = crate::closure::hex(&Sha256::digest(p.as_bytes()));
                format!(
                    "{{\"path\": {p:?}, \"nar_hash\": \"{nar_hash}\", \"nar_size\": {size}, \"references\": [{}]}}",
                    refs.join(",")
                )
            })
            .collect();
        Closure::from_json(&format!(
            "{{\"result\": {result:?}, \"result_dirs\": [], \"paths\": [{}]}}",
            paths.join(",")
        ))
        .unwrap()
    }

    fn mean_leaf_ratio(c: &Closure, layers: &[Layer]) -> f64 {
        let leaves: Vec<&StorePath> = c
            .paths
            .keys()
            .filter(|p| p.name().starts_with("leaf"))
            .collect();
        leaves
            .iter()
            .map(|p| {
                let (recreated, changed) = change_cost(c, layers, p);
                recreated as f64 / changed as f64
            })
            .sum::<f64>()
            / leaves.len() as f64
    }

    #[test]
    fn beats_the_popularity_plan_on_leaf_changes() {
        let c = synthetic(220, 60);
        let ours = mean_leaf_ratio(&c, &plan(&c, 100));
        let popularity = mean_leaf_ratio(&c, &plan_popularity(&c, 100));
        eprintln!("mean leaf-change ratio: ours {ours:.3}, popularity {popularity:.3}");
        assert!(ours < 1.5, "mean leaf-change ratio {ours:.2}");
        assert!(
            ours < popularity / 2.0,
            "ours {ours:.2} vs popularity {popularity:.2}"
        );
    }

    #[test]
    fn a_chain_10000_paths_deep_plans_without_overflowing_the_stack() {
        // Each path refers to the one before it: the walk of what every
        // path requires goes 10,000 deep (it once recursed, and overflowed).
        let name = |i: usize| format!("/nix/store/{i:0>32}-p{i}");
        let paths: Vec<String> = (0..10_000)
            .map(|i| {
                let refs = if i == 0 { String::new() } else { format!("{:?}", name(i - 1)) };
                format!(
                    "{{\"path\": {:?}, \"nar_hash\": \"{}\", \"nar_size\": 4096, \"references\": [{refs}]}}",
                    name(i),
                    "0".repeat(64)
                )
            })
            .collect();
        let c = Closure::from_json(&format!(
            "{{\"result\": {:?}, \"result_dirs\": [], \"paths\": [{}]}}",
            name(9_999),
            paths.join(",")
        ))
        .unwrap();
        let layers = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || plan(&c, 100).len())
            .unwrap()
            .join()
            .expect("planning a deep chain does not overflow a 256 KiB stack");
        assert!(layers <= 100);
    }

    #[test]
    fn the_layer_limit_holds_for_2000_paths() {
        let c = synthetic(1500, 498);
        assert_eq!(c.paths.len(), 2000);
        for n in [1, 2, 40, 100] {
            let layers = plan(&c, n);
            assert!(
                layers.len() <= usize::from(n),
                "{} layers for a budget of {n}",
                layers.len()
            );
            assert_eq!(
                layers.iter().map(|l| l.paths.len()).sum::<usize>(),
                2000,
                "every path in exactly one layer"
            );
        }
    }

    #[test]
    fn the_base_stays_alone_at_the_bottom_and_the_result_on_top() {
        let c = synthetic(220, 60);
        let layers = plan(&c, 40);
        assert_eq!(names(&layers[..1]), vec![vec!["base0"]]);
        assert_eq!(layers.last().unwrap().paths, vec![c.result.clone()]);
    }

    #[test]
    fn golden_plans() {
        let c = golden();
        let show = |layers: &[Layer]| {
            layers
                .iter()
                .map(|l| {
                    l.paths
                        .iter()
                        .map(StorePath::name)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        insta::assert_snapshot!("golden_python_3", show(&plan(&c, 3)));
        insta::assert_snapshot!("golden_python_40", show(&plan(&c, 40)));
        insta::assert_snapshot!("synthetic_280_12", show(&plan(&synthetic(220, 60), 12)));
    }
}

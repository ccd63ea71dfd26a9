//! Pictures of a closure: `graph.dot` and `graph.svg`, drawn in Rust.
//!
//! The builder used to run graphviz `dot` on `nix-store --query --graph`;
//! on a 2,001-path closure that took 17 minutes and drew a hairball no one
//! could read. Both files are now pure functions of the closure (and, for
//! the SVG, of the layer plan), with no graphviz anywhere:
//!
//! - [`dot`] writes the reference graph as Graphviz text in the format
//!   `nix-store --query --graph` prints, sorted by store path so the bytes
//!   depend on the closure alone. It is the full graph, for tools.
//! - [`svg`] draws a picture for a person. Which picture depends on size:
//!
//! # Small closures: the graph itself
//!
//! Up to [`MAX_GRAPH_PATHS`] paths are drawn as a layered graph
//! (Sugiyama's method, kept small):
//!
//! 1. **Ranks**: the result on top; every path one rank below the lowest of
//!    its referrers (rank = the longest reference chain from the result),
//!    so a path sits above everything it refers to. Self-references are
//!    skipped.
//! 2. **Long edges** (spanning more than one rank) run down through
//!    invisible points, one per rank; all long edges into the same path
//!    share them, so they join one trunk instead of crossing the picture
//!    one by one (what graphviz calls `concentrate`).
//! 3. **Order within a rank**: barycentre sweeps, down and up; each path
//!    moves to the mean position of its neighbours in the rank before.
//!    The order with the fewest crossings seen is kept.
//! 4. **x positions**: each path is pulled towards the mean x of its
//!    neighbours and the rank is then placed as close to those wishes as
//!    the boxes allow without overlapping (an isotonic regression, which
//!    solves that exactly).
//!
//! Each box shows the path's name, its NAR size and a bar for its size
//! relative to the largest path; its colour and `Ln` tag name the image
//! layer it is in. Arrows point from a path to the paths it refers to.
//!
//! # Large closures: the layers
//!
//! A graph of hundreds of paths is a hairball whatever the layout, and one
//! with dozens of paths side by side (a result that refers to them all)
//! is too wide to read. Larger closures, and graphs wider than
//! [`MAX_GRAPH_WIDTH`], are drawn as the image's layers instead: one row
//! per layer, the bottom layer at the bottom, with a bar as wide as its
//! bytes, its path count, size and three largest paths. The picture says that
//! `graph.dot` holds the full graph.
//!
//! Both drawings take time linear in the closure (the graph drawing is
//! only used where its quadratic steps are small); 10,000 paths with
//! 50,000 references take milliseconds.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::closure::{Closure, PathInfo, StorePath, STORE_DIR};
use crate::layers::Layer;

/// Closures of at most this many paths are drawn as a graph; larger ones
/// as their layers.
pub const MAX_GRAPH_PATHS: usize = 150;

/// A graph wider than this (in px, about 30 boxes side by side: a result
/// that refers to dozens of paths directly) is drawn as layers too.
pub const MAX_GRAPH_WIDTH: f64 = 4000.0;

/// The edge colours `nix-store --query --graph` cycles through.
const DOT_COLOURS: [&str; 6] = ["black", "red", "green", "blue", "magenta", "burlywood"];

/// `graph.dot`: the closure as Graphviz text, in the format `nix-store
/// --query --graph` prints (nodes labelled with the store path's name,
/// edges from a reference to its referrer), sorted so the bytes are a
/// function of the closure.
pub fn dot(closure: &Closure) -> String {
    let mut out = String::with_capacity(64 + closure.paths.len() * 300);
    out.push_str("digraph G {\n");
    let mut edge = 0;
    for (path, info) in &closure.paths {
        let id = base_name(path);
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "{} [label = {}, shape = box, style = filled, fillcolor = \"#ff0000\"];",
            dot_quote(id),
            dot_quote(path.name())
        );
        for r in info.references.iter().filter(|r| *r != path) {
            let _ = writeln!(
                out,
                "{} -> {} [color = \"{}\"];",
                dot_quote(base_name(r)),
                dot_quote(id),
                DOT_COLOURS[edge % DOT_COLOURS.len()]
            );
            edge += 1;
        }
    }
    out.push_str("}\n");
    out
}

/// `graph.svg`: a picture a person can read. The graph itself for a
/// closure of at most [`MAX_GRAPH_PATHS`] paths, the image's layers
/// (`plan`, bottom first) for a larger one; see the module documentation.
pub fn svg(closure: &Closure, plan: &[Layer]) -> String {
    if closure.paths.len() > MAX_GRAPH_PATHS {
        return layers_svg(
            closure,
            plan,
            &format!("More than {MAX_GRAPH_PATHS} store paths are too many to draw as a graph;"),
        );
    }
    graph_svg(closure, plan).unwrap_or_else(|| {
        layers_svg(
            closure,
            plan,
            "Too many store paths side by side to draw as a graph;",
        )
    })
}

/// `hash-name`, the node id `nix-store --query --graph` uses.
fn base_name(path: &StorePath) -> &str {
    &path.as_str()[STORE_DIR.len() + 1..]
}

/// A DOT double-quoted string.
fn dot_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Text escaped for XML character data and attribute values.
fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// At most `max` characters, the last an ellipsis when cut.
fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        Cow::Borrowed(s)
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        Cow::Owned(t)
    }
}

/// Bytes for people: `512 B`, `118.5 KiB`, `4.9 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `2,000`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 path`, `3 paths`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", grouped(n), if n == 1 { one } else { many })
}

/// A coordinate with at most one decimal (no `-0`).
fn num(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0 + 0.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// Advance of one character of the monospace font at 12 px (DejaVu Sans
/// Mono is 0.602 em), with a little room for fonts that run wider.
const CHAR_W: f64 = 7.4;
const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";
const MARGIN: f64 = 20.0;

/// Layer colours (ColorBrewer Set3: light enough for dark text).
const LAYER_FILLS: [&str; 12] = [
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
    "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f",
];
/// For a path the plan does not place.
const NO_LAYER_FILL: &str = "#eeeeee";

fn layer_fill(layer: usize) -> &'static str {
    LAYER_FILLS[layer % LAYER_FILLS.len()]
}

/// The document's opening: namespace, size, view box, a white page and a
/// title for screen readers and tab names.
fn open_svg(out: &mut String, width: f64, height: f64, title: &str) {
    let (w, h) = (num(width.ceil()), num(height.ceil()));
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"{FONT}\" font-size=\"12\">\n\
         <title>{}</title>\n<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n",
        esc(title)
    );
}

/// `python-http: 4 store paths, 29.4 MiB, 3 layers`.
fn headline(closure: &Closure, plan: &[Layer]) -> String {
    format!(
        "{}: {}, {}, {}",
        closure.result.name(),
        count(closure.paths.len(), "store path", "store paths"),
        human(closure.nar_size()),
        count(plan.len(), "layer", "layers"),
    )
}

/// Writes a `<text>` element.
fn text(out: &mut String, x: f64, y: f64, attrs: &str, content: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\"{attrs}>{}</text>",
        num(x),
        num(y),
        esc(content)
    );
}

// ---------------------------------------------------------------------------
// Small closures: the layered graph.

const BOX_H: f64 = 40.0;
const RANK_GAP: f64 = 56.0;
const GAP_BOXES: f64 = 20.0;
const GAP_TRUNK: f64 = 10.0;
const NAME_CHARS: usize = 36;

/// One point of the layered graph: a store path or a bend of a long edge.
struct Node {
    /// Index into the closure's paths, `None` for a bend.
    path: Option<usize>,
    rank: usize,
    width: f64,
    x: f64,
}

/// The graph drawing, or `None` when it would be wider than
/// [`MAX_GRAPH_WIDTH`].
fn graph_svg(closure: &Closure, plan: &[Layer]) -> Option<String> {
    let infos: Vec<&PathInfo> = closure.paths.values().collect();
    let n = infos.len();
    let index: BTreeMap<&StorePath, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.path, i))
        .collect();
    // refs[i]: what path i refers to, self-references skipped (and
    // references outside the closure, which a closed closure has none of).
    let refs: Vec<Vec<usize>> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.references
                .iter()
                .filter_map(|r| index.get(r).copied())
                .filter(|j| *j != i)
                .collect()
        })
        .collect();
    let layer_of: BTreeMap<&StorePath, usize> = crate::layers::index(plan);
    let result = index.get(&closure.result).copied();

    let rank = ranks(n, &refs, result);

    // The layered graph: paths, then the bends of long edges (one trunk per
    // target path), and segments between adjacent ranks.
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            path: Some(i),
            rank: rank[i],
            width: box_width(infos[i], closure.result == infos[i].path),
            x: 0.0,
        })
        .collect();
    let mut trunk: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut segments: BTreeSet<(usize, usize)> = BTreeSet::new();
    // Edges that do not run downwards (only reference cycles make them).
    let mut upward: Vec<(usize, usize)> = Vec::new();
    for (u, targets) in refs.iter().enumerate() {
        for &v in targets {
            if rank[v] <= rank[u] {
                upward.push((u, v));
                continue;
            }
            let mut prev = u;
            for r in rank[u] + 1..rank[v] {
                let bend = *trunk.entry((v, r)).or_insert_with(|| {
                    nodes.push(Node {
                        path: None,
                        rank: r,
                        width: 0.0,
                        x: 0.0,
                    });
                    nodes.len() - 1
                });
                segments.insert((prev, bend));
                prev = bend;
            }
            segments.insert((prev, v));
        }
    }
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for &(a, b) in &segments {
        down[a].push(b);
        up[b].push(a);
    }

    let ranks_n = nodes.iter().map(|v| v.rank + 1).max().unwrap_or(0);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); ranks_n];
    // The result first on its rank, then store-path order; bends after.
    if let Some(r) = result {
        rows[0].push(r);
    }
    for (i, v) in nodes.iter().enumerate() {
        if Some(i) != result {
            rows[v.rank].push(i);
        }
    }
    order_rows(&mut rows, &up, &down, nodes.len());
    place_x(&mut nodes, &rows, &up, &down);

    // Page geometry.
    let title = headline(closure, plan);
    let legend = legend_entries(plan);
    let left = nodes
        .iter()
        .map(|v| v.x - v.width / 2.0)
        .fold(f64::INFINITY, f64::min);
    let right = nodes
        .iter()
        .map(|v| v.x + v.width / 2.0)
        .fold(f64::NEG_INFINITY, f64::max);
    let shift = MARGIN - if left.is_finite() { left } else { 0.0 };
    for v in &mut nodes {
        v.x += shift;
    }
    let graph_w = if right.is_finite() { right - left } else { 0.0 };
    if graph_w > MAX_GRAPH_WIDTH {
        return None;
    }
    let notes = [
        "Arrows point from a store path to the paths it refers to.",
        "Colour and tag Ln: the image layer (L0 is the bottom layer). Bar: size next to the largest path.",
    ];
    let text_w = notes
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(title.chars().count() * 16 / 12) as f64
        * CHAR_W;
    let width = (graph_w.max(text_w).max(LEGEND_W * 3.0) + 2.0 * MARGIN).max(480.0);
    let top = 84.0;
    let rank_y = |r: usize| top + r as f64 * (BOX_H + RANK_GAP);
    let graph_bottom = rank_y(ranks_n.max(1)) - RANK_GAP;
    let per_line = (((width - 2.0 * MARGIN) / LEGEND_W).floor() as usize).max(1);
    let legend_top = graph_bottom + 36.0;
    let legend_lines = legend.len().div_ceil(per_line);
    let height = legend_top + legend_lines as f64 * 20.0 + MARGIN;

    let mut out = String::with_capacity(4096 + nodes.len() * 400 + segments.len() * 80);
    open_svg(&mut out, width, height, &title);
    text(
        &mut out,
        MARGIN,
        30.0,
        " font-size=\"16\" font-weight=\"bold\"",
        &title,
    );
    text(&mut out, MARGIN, 50.0, " fill=\"#555555\"", notes[0]);
    text(&mut out, MARGIN, 66.0, " fill=\"#555555\"", notes[1]);

    // Edges below the boxes: one path of curves for all of them, then one
    // arrowhead on top of each referenced box (every edge into a box ends
    // there, coming straight down).
    let bottom = |v: &Node| rank_y(v.rank) + if v.path.is_some() { BOX_H } else { 0.0 };
    let mut d = String::new();
    for (a, targets) in down.iter().enumerate() {
        let va = &nodes[a];
        let mut targets: Vec<usize> = targets.clone();
        targets.sort_by(|p, q| nodes[*p].x.total_cmp(&nodes[*q].x).then(p.cmp(q)));
        let spread = if va.path.is_some() {
            (va.width * 0.6).min(12.0 * targets.len() as f64)
        } else {
            0.0
        };
        for (k, &b) in targets.iter().enumerate() {
            let vb = &nodes[b];
            let x1 = if targets.len() > 1 {
                va.x - spread / 2.0 + spread * k as f64 / (targets.len() - 1) as f64
            } else {
                va.x
            };
            let y1 = bottom(va);
            let y2 = rank_y(vb.rank) - if vb.path.is_some() { 6.0 } else { 0.0 };
            let ym = (y1 + y2) / 2.0;
            let _ = write!(
                d,
                "M{} {}C{} {} {} {} {} {}",
                num(x1),
                num(y1),
                num(x1),
                num(ym),
                num(vb.x),
                num(ym),
                num(vb.x),
                num(y2)
            );
            if vb.path.is_none() {
                // Straight through the rank to the bend's lower end.
                let _ = write!(d, "V{}", num(rank_y(vb.rank) + BOX_H));
            }
        }
    }
    for &(u, v) in &upward {
        // Against the flow: around the right of both boxes.
        let (a, b) = (&nodes[u], &nodes[v]);
        let (ya, yb) = (rank_y(a.rank) + BOX_H / 2.0, rank_y(b.rank) + BOX_H / 2.0);
        let xr = a.x.max(b.x) + a.width.max(b.width) / 2.0 + 24.0;
        let _ = write!(
            d,
            "M{} {}C{} {} {} {} {} {}",
            num(a.x + a.width / 2.0),
            num(ya),
            num(xr),
            num(ya),
            num(xr),
            num(yb),
            num(b.x + b.width / 2.0 + 6.0),
            num(yb)
        );
    }
    if !d.is_empty() {
        let _ = writeln!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"#7a8290\" stroke-width=\"1.3\" stroke-opacity=\"0.8\"/>"
        );
    }
    let mut heads = String::new();
    for (i, v) in nodes.iter().enumerate().take(n) {
        if !up[i].is_empty() {
            let (x, y) = (v.x, rank_y(v.rank));
            let _ = write!(heads, "M{} {}l-4.5 -8h9z", num(x), num(y));
        }
    }
    for &(_, v) in &upward {
        let b = &nodes[v];
        let (x, y) = (b.x + b.width / 2.0, rank_y(b.rank) + BOX_H / 2.0);
        let _ = write!(heads, "M{} {}l8 -4.5v9z", num(x), num(y));
    }
    if !heads.is_empty() {
        let _ = writeln!(out, "<path d=\"{heads}\" fill=\"#5a6270\"/>");
    }

    // Boxes.
    let max_size = infos.iter().map(|p| p.nar_size).max().unwrap_or(0).max(1);
    for v in &nodes {
        let Some(i) = v.path else { continue };
        let info = infos[i];
        let is_result = info.path == closure.result;
        let layer = layer_of.get(&info.path).copied();
        let (x0, y0) = (v.x - v.width / 2.0, rank_y(v.rank));
        let fill = layer.map_or(NO_LAYER_FILL, layer_fill);
        let _ = writeln!(
            out,
            "<g>\n<title>{}</title>\n<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"4\" \
             fill=\"{fill}\" stroke=\"#333333\" stroke-width=\"{}\"/>",
            esc(info.path.as_str()),
            num(x0),
            num(y0),
            num(v.width),
            num(BOX_H),
            if is_result { "2.5" } else { "1" }
        );
        let bar = ((v.width - 2.0) * info.nar_size as f64 / max_size as f64).max(1.0);
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"4\" fill=\"#000000\" fill-opacity=\"0.45\"/>",
            num(x0 + 1.0),
            num(y0 + BOX_H - 5.0),
            num(bar)
        );
        text(
            &mut out,
            x0 + 8.0,
            y0 + 15.0,
            if is_result {
                " font-weight=\"bold\""
            } else {
                ""
            },
            &truncate(info.path.name(), NAME_CHARS),
        );
        text(
            &mut out,
            x0 + 8.0,
            y0 + 30.0,
            " font-size=\"11\" fill=\"#333333\"",
            &human(info.nar_size),
        );
        let tag = layer.map_or_else(|| "L?".to_owned(), |l| format!("L{l}"));
        text(
            &mut out,
            x0 + v.width - 8.0,
            y0 + 30.0,
            " font-size=\"11\" font-weight=\"bold\" fill=\"#333333\" text-anchor=\"end\"",
            &tag,
        );
        out.push_str("</g>\n");
    }

    // Legend: one swatch per layer.
    for (k, (fill, label)) in legend.iter().enumerate() {
        let x = MARGIN + (k % per_line) as f64 * LEGEND_W;
        let y = legend_top + (k / per_line) as f64 * 20.0;
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{fill}\" stroke=\"#333333\"/>",
            num(x),
            num(y - 10.0)
        );
        text(&mut out, x + 18.0, y, " font-size=\"11\"", label);
    }
    out.push_str("</svg>\n");
    Some(out)
}

const LEGEND_W: f64 = 220.0;

/// `(fill, "L0 5.0 MiB, 1 path")` for each layer of the plan.
fn legend_entries(plan: &[Layer]) -> Vec<(&'static str, String)> {
    plan.iter()
        .enumerate()
        .map(|(i, l)| {
            (
                layer_fill(i),
                format!(
                    "L{i} {}, {}",
                    human(l.nar_size),
                    count(l.paths.len(), "path", "paths")
                ),
            )
        })
        .collect()
}

/// Width of a path's box: its name, or its size and layer tag.
fn box_width(info: &PathInfo, is_result: bool) -> f64 {
    let name = truncate(info.path.name(), NAME_CHARS).chars().count() as f64
        * CHAR_W
        * if is_result { 1.1 } else { 1.0 };
    let second = (human(info.nar_size).len() + 5) as f64 * CHAR_W;
    (name.max(second) + 16.0).max(96.0)
}

/// Rank of each path: the longest reference chain from a path no one
/// refers to (the result). Reference cycles cannot occur in a Nix store
/// but are tolerated: their edges are dropped in an order fixed by the
/// store paths.
fn ranks(n: usize, refs: &[Vec<usize>], result: Option<usize>) -> Vec<usize> {
    let mut referrers = vec![0usize; n];
    for targets in refs {
        for &v in targets {
            referrers[v] += 1;
        }
    }
    // Kahn's topological order, the result first.
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut ready: std::collections::VecDeque<usize> = result
        .into_iter()
        .chain((0..n).filter(|i| Some(*i) != result))
        .filter(|i| referrers[*i] == 0)
        .collect();
    let mut placed = vec![false; n];
    while order.len() < n {
        let next = match ready.pop_front() {
            Some(i) => i,
            // A cycle: take its first path in store-path order.
            None => (0..n).find(|i| !placed[*i]).expect("a path is left"),
        };
        if placed[next] {
            continue;
        }
        placed[next] = true;
        order.push(next);
        for &v in &refs[next] {
            if !placed[v] {
                referrers[v] -= 1;
                if referrers[v] == 0 {
                    ready.push_back(v);
                }
            }
        }
    }
    let mut position = vec![0; n];
    for (k, &i) in order.iter().enumerate() {
        position[i] = k;
    }
    let mut rank = vec![0; n];
    for &u in &order {
        for &v in &refs[u] {
            if position[v] > position[u] {
                rank[v] = rank[v].max(rank[u] + 1);
            }
        }
    }
    rank
}

/// Barycentre sweeps: each node to the mean position of its neighbours in
/// the rank before; the order with the fewest crossings is kept.
fn order_rows(rows: &mut [Vec<usize>], up: &[Vec<usize>], down: &[Vec<usize>], nodes: usize) {
    let mut position = vec![0usize; nodes];
    let refresh = |rows: &[Vec<usize>], position: &mut [usize]| {
        for row in rows {
            for (k, &v) in row.iter().enumerate() {
                position[v] = k;
            }
        }
    };
    refresh(rows, &mut position);
    let mut best = (crossings(rows, down, &position), rows.to_vec());
    for sweep in 0..8 {
        let downwards = sweep % 2 == 0;
        let range: Vec<usize> = if downwards {
            (1..rows.len()).collect()
        } else {
            (0..rows.len().saturating_sub(1)).rev().collect()
        };
        for r in range {
            let neighbours = if downwards { up } else { down };
            let mut keyed: Vec<(f64, usize)> = rows[r]
                .iter()
                .map(|&v| {
                    let ns = &neighbours[v];
                    let key = if ns.is_empty() {
                        position[v] as f64
                    } else {
                        ns.iter().map(|&u| position[u] as f64).sum::<f64>() / ns.len() as f64
                    };
                    (key, v)
                })
                .collect();
            // Stable: ties keep their current order.
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            rows[r] = keyed.into_iter().map(|(_, v)| v).collect();
            for (k, &v) in rows[r].iter().enumerate() {
                position[v] = k;
            }
        }
        let c = crossings(rows, down, &position);
        if c < best.0 {
            best = (c, rows.to_vec());
        }
    }
    rows.clone_from_slice(&best.1);
}

/// Edge crossings between adjacent ranks.
fn crossings(rows: &[Vec<usize>], down: &[Vec<usize>], position: &[usize]) -> usize {
    let mut total = 0;
    for row in rows {
        // Segments as (upper position, lower position), sorted by the upper
        // end: every later segment whose lower end is further left crosses.
        let mut segs: Vec<(usize, usize)> = row
            .iter()
            .flat_map(|&a| down[a].iter().map(move |&b| (position[a], position[b])))
            .collect();
        segs.sort_unstable();
        for (i, s) in segs.iter().enumerate() {
            total += segs[i + 1..]
                .iter()
                .filter(|t| t.0 > s.0 && t.1 < s.1)
                .count();
        }
    }
    total
}

/// x positions: nodes pulled towards their neighbours, rows kept in order
/// and without overlaps.
fn place_x(nodes: &mut [Node], rows: &[Vec<usize>], up: &[Vec<usize>], down: &[Vec<usize>]) {
    let gap = |a: &Node, b: &Node| {
        (a.width + b.width) / 2.0
            + if a.path.is_some() && b.path.is_some() {
                GAP_BOXES
            } else {
                GAP_TRUNK
            }
    };
    // Packed from the left, each row centred on the widest.
    let widths: Vec<f64> = rows
        .iter()
        .map(|row| {
            row.windows(2)
                .map(|w| gap(&nodes[w[0]], &nodes[w[1]]))
                .sum::<f64>()
        })
        .collect();
    let widest = widths.iter().copied().fold(0.0, f64::max);
    for (row, w) in rows.iter().zip(&widths) {
        let mut x = (widest - w) / 2.0;
        for (k, &v) in row.iter().enumerate() {
            if k > 0 {
                x += gap(&nodes[row[k - 1]], &nodes[v]);
            }
            nodes[v].x = x;
        }
    }
    for pass in 0..8 {
        let downwards = pass % 2 == 0;
        let order: Vec<usize> = if downwards {
            (1..rows.len()).collect()
        } else {
            (0..rows.len().saturating_sub(1)).rev().collect()
        };
        for r in order {
            let row = &rows[r];
            if row.is_empty() {
                continue;
            }
            let neighbours = if downwards { up } else { down };
            let wish: Vec<f64> = row
                .iter()
                .map(|&v| {
                    let ns = &neighbours[v];
                    if ns.is_empty() {
                        nodes[v].x
                    } else {
                        ns.iter().map(|&u| nodes[u].x).sum::<f64>() / ns.len() as f64
                    }
                })
                .collect();
            let separation: Vec<f64> = row
                .windows(2)
                .map(|w| gap(&nodes[w[0]], &nodes[w[1]]))
                .collect();
            for (v, x) in row.iter().zip(closest_in_order(&wish, &separation)) {
                nodes[*v].x = x;
            }
        }
    }
}

/// The x_i closest (least squares) to `wish` with x_{i+1} − x_i ≥
/// `separation[i]`: with offsets o_i (the summed separations), y_i = x_i −
/// o_i must not decrease, an isotonic regression of wish_i − o_i, solved by
/// pooling adjacent violators.
fn closest_in_order(wish: &[f64], separation: &[f64]) -> Vec<f64> {
    let mut offset = Vec::with_capacity(wish.len());
    let mut o = 0.0;
    for i in 0..wish.len() {
        if i > 0 {
            o += separation[i - 1];
        }
        offset.push(o);
    }
    // Blocks of (sum, count), merged while a block's mean exceeds the next.
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for (w, o) in wish.iter().zip(&offset) {
        blocks.push((w - o, 1));
        while blocks.len() > 1 {
            let (s2, c2) = blocks[blocks.len() - 1];
            let (s1, c1) = blocks[blocks.len() - 2];
            if s1 / c1 as f64 > s2 / c2 as f64 {
                blocks.pop();
                *blocks.last_mut().expect("two blocks") = (s1 + s2, c1 + c2);
            } else {
                break;
            }
        }
    }
    let mut out = Vec::with_capacity(wish.len());
    for (s, c) in blocks {
        let mean = s / c as f64;
        for _ in 0..c {
            out.push(mean + offset[out.len()]);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Large closures: the layers.

const ROW_H: f64 = 40.0;
const BAR_X: f64 = 72.0;
const BAR_W: f64 = 420.0;

/// The layers drawing; `why` is the first half of a sentence that says
/// why the graph is not drawn.
fn layers_svg(closure: &Closure, plan: &[Layer], why: &str) -> String {
    let title = headline(closure, plan);
    let notes = [
        format!("{why} these are the image layers, the bottom layer at the bottom."),
        format!(
            "graph.dot has the full graph ({} store paths, {}).",
            grouped(closure.paths.len()),
            count(
                closure
                    .paths
                    .values()
                    .map(|p| p.references.iter().filter(|r| **r != p.path).count())
                    .sum(),
                "reference",
                "references"
            )
        ),
    ];
    let total = closure.nar_size().max(1);
    let largest = plan.iter().map(|l| l.nar_size).max().unwrap_or(0).max(1);
    let rows: Vec<(String, String)> = plan
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let holds_result = layer.paths.contains(&closure.result);
            let share = layer.nar_size as f64 * 100.0 / total as f64;
            let first = format!(
                "{}, {} ({}){}",
                count(layer.paths.len(), "path", "paths"),
                human(layer.nar_size),
                if share < 0.05 {
                    "< 0.1 %".to_owned()
                } else {
                    format!("{share:.1} %")
                },
                if holds_result {
                    if i + 1 == plan.len() {
                        ", the result"
                    } else {
                        ", with the result"
                    }
                } else {
                    ""
                },
            );
            let largest = biggest(closure, layer, 3)
                .iter()
                .map(|(p, size)| format!("{} {}", truncate(p.name(), 40), human(*size)))
                .collect::<Vec<_>>()
                .join(", ");
            let second = if layer.paths.len() > 1 {
                format!("largest: {largest}")
            } else {
                largest
            };
            (first, second)
        })
        .collect();
    let text_chars = rows
        .iter()
        .map(|(a, b)| a.chars().count().max(b.chars().count()))
        .max()
        .unwrap_or(0);
    let notes_chars = notes.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let width = (BAR_X + BAR_W + 16.0 + text_chars as f64 * CHAR_W + MARGIN)
        .max(MARGIN * 2.0 + notes_chars as f64 * CHAR_W)
        .max(MARGIN * 2.0 + title.chars().count() as f64 * CHAR_W * 16.0 / 12.0);
    let top = 92.0;
    let height = top + plan.len().max(1) as f64 * ROW_H + MARGIN;

    let mut out = String::with_capacity(2048 + plan.len() * 400);
    open_svg(&mut out, width, height, &title);
    text(
        &mut out,
        MARGIN,
        30.0,
        " font-size=\"16\" font-weight=\"bold\"",
        &title,
    );
    text(&mut out, MARGIN, 52.0, " fill=\"#555555\"", &notes[0]);
    text(&mut out, MARGIN, 68.0, " fill=\"#555555\"", &notes[1]);
    if plan.is_empty() {
        text(&mut out, MARGIN, top + 20.0, "", "(no layer plan)");
    }
    // Top row first, so the text reads in the picture's order.
    for (i, (layer, (first, second))) in plan.iter().zip(&rows).enumerate().rev() {
        // The bottom layer on the bottom row.
        let y = top + (plan.len() - 1 - i) as f64 * ROW_H;
        let bar = (BAR_W * layer.nar_size as f64 / largest as f64).max(2.0);
        let _ = writeln!(out, "<g>");
        text(
            &mut out,
            BAR_X - 10.0,
            y + 20.0,
            " font-weight=\"bold\" text-anchor=\"end\"",
            &format!("L{i}"),
        );
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"28\" fill=\"#f4f4f4\"/>\n\
             <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"28\" fill=\"{}\" stroke=\"#333333\"/>",
            num(BAR_X),
            num(y + 2.0),
            num(BAR_W),
            num(BAR_X),
            num(y + 2.0),
            num(bar),
            layer_fill(i)
        );
        let tx = BAR_X + BAR_W + 16.0;
        text(&mut out, tx, y + 14.0, "", first);
        text(
            &mut out,
            tx,
            y + 29.0,
            " font-size=\"11\" fill=\"#555555\"",
            second,
        );
        let _ = writeln!(out, "</g>");
    }
    out.push_str("</svg>\n");
    out
}

/// The `k` largest paths of a layer with their sizes, largest first (ties
/// in store-path order).
fn biggest<'a>(closure: &Closure, layer: &'a Layer, k: usize) -> Vec<(&'a StorePath, u64)> {
    let mut top: Vec<(&StorePath, u64)> = Vec::with_capacity(k + 1);
    for p in &layer.paths {
        let size = closure.paths.get(p).map_or(0, |i| i.nar_size);
        let at = top
            .iter()
            .position(|(q, s)| size > *s || (size == *s && p < *q))
            .unwrap_or(top.len());
        if at < k {
            top.insert(at, (p, size));
            top.truncate(k);
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::NarHash;
    use crate::layers::{plan, tests::synthetic};

    fn golden() -> Closure {
        Closure::from_json(include_str!("../tests/golden/python-closure.json")).unwrap()
    }

    /// `n` paths in ten tiers, each referring to `refs` random paths of
    /// lower tiers (so no cycles, and chains at most ten long); path 0, the
    /// result, refers to the whole first tier.
    fn generated(n: usize, refs: usize) -> Closure {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let tier = |i: usize| 1 + (i - 1) * 10 / (n - 1);
        // The first path of each tier.
        let mut starts: BTreeMap<usize, usize> = BTreeMap::new();
        for i in (1..n).rev() {
            starts.insert(tier(i), i);
        }
        let first_of = |t: usize| starts.get(&t).copied();
        let path = |i: usize| StorePath::parse(&format!("/nix/store/{i:032}-pkg{i}-1.0")).unwrap();
        let paths = (0..n)
            .map(|i| {
                let references: BTreeSet<StorePath> = if i == 0 {
                    (1..n).filter(|j| tier(*j) == 1).map(path).collect()
                } else {
                    match first_of(tier(i) + 1) {
                        Some(lo) => (0..refs)
                            .map(|_| path(lo + rand((n - lo) as u64) as usize))
                            .collect(),
                        None => BTreeSet::new(),
                    }
                };
                let info = PathInfo {
                    path: path(i),
                    nar_size: (1 + rand(1000).pow(2)) << 10,
                    nar_hash: NarHash([0; 32]),
                    references,
                    deriver: None,
                };
                (path(i), info)
            })
            .collect();
        Closure {
            result: path(0),
            result_dirs: vec![],
            paths,
        }
    }

    /// (reference, referrer) pairs read back from DOT text, as full paths.
    fn dot_edges(text: &str) -> BTreeSet<(String, String)> {
        text.lines()
            .filter(|l| l.contains(" -> "))
            .map(|l| {
                let quoted: Vec<&str> = l.split('"').collect();
                (
                    format!("{STORE_DIR}/{}", quoted[1]),
                    format!("{STORE_DIR}/{}", quoted[3]),
                )
            })
            .collect()
    }

    fn reference_pairs(c: &Closure) -> BTreeSet<(String, String)> {
        c.paths
            .values()
            .flat_map(|p| {
                p.references
                    .iter()
                    .filter(move |r| **r != p.path)
                    .map(move |r| (r.to_string(), p.path.to_string()))
            })
            .collect()
    }

    #[test]
    fn golden_dot() {
        insta::assert_snapshot!("golden_python_dot", dot(&golden()));
    }

    #[test]
    fn golden_svg() {
        let c = golden();
        insta::assert_snapshot!("golden_python_svg", svg(&c, &plan(&c, 3)));
    }

    #[test]
    fn dot_edges_are_exactly_the_references() {
        for c in [golden(), synthetic(220, 60), generated(500, 5)] {
            let text = dot(&c);
            let edges = dot_edges(&text);
            assert_eq!(edges, reference_pairs(&c));
            assert_eq!(
                text.lines().filter(|l| l.contains(" -> ")).count(),
                edges.len(),
                "no edge twice"
            );
            assert_eq!(
                text.lines().filter(|l| l.contains("[label = ")).count(),
                c.paths.len(),
                "a node per path"
            );
            assert!(text.starts_with("digraph G {\n") && text.ends_with("}\n"));
        }
    }

    #[test]
    fn dot_skips_self_references() {
        // glibc refers to itself in the golden closure.
        let text = dot(&golden());
        assert!(!text.contains("\"7x2ss8sbbm2s8wvm4nicn5aw9dqk8qsm-glibc-2.36\" -> \"7x2ss8sbbm2s8wvm4nicn5aw9dqk8qsm-glibc-2.36\""));
    }

    /// The y of each path's box, by name.
    fn box_tops(svg: &str) -> BTreeMap<String, f64> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("g"))
            .filter_map(|g| {
                let title = g.children().find(|c| c.has_tag_name("title"))?.text()?;
                let rect = g.children().find(|c| c.has_tag_name("rect"))?;
                let name = StorePath::parse(title).ok()?.name().to_owned();
                Some((name, rect.attribute("y")?.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn small_closure_is_drawn_as_a_graph_with_the_result_on_top() {
        let c = golden();
        let picture = svg(&c, &plan(&c, 3));
        let y = box_tops(&picture);
        assert_eq!(y.len(), 4, "a box per path");
        // Rank = longest reference chain: python-http → zlib → glibc.
        assert!(y["python-http"] < y["zlib-1.2.13"]);
        assert_eq!(y["zlib-1.2.13"], y["expat-2.5.0"]);
        assert!(y["expat-2.5.0"] < y["glibc-2.36"]);
        for tag in [">L0<", ">L1<", ">L2<", ">5.0 MiB<", ">24.0 MiB<"] {
            assert!(picture.contains(tag), "{tag} is shown");
        }
    }

    #[test]
    fn every_box_sits_below_all_its_referrers() {
        let c = synthetic(30, 14);
        let y = box_tops(&svg(&c, &plan(&c, 12)));
        assert_eq!(y.len(), c.paths.len());
        for p in c.paths.values() {
            for r in p.references.iter().filter(|r| **r != p.path) {
                assert!(y[p.path.name()] < y[r.name()], "{} above {}", p.path, r);
            }
        }
    }

    #[test]
    fn a_2000_path_closure_is_drawn_as_its_layers() {
        let c = synthetic(1500, 498);
        assert_eq!(c.paths.len(), 2000);
        let layers = plan(&c, 100);
        let picture = svg(&c, &layers);
        assert!(picture.len() < 200 * 1024, "{} bytes", picture.len());
        assert!(picture.contains(&format!(
            "result1999: 2,000 store paths, {}, {} layers",
            human(c.nar_size()),
            layers.len()
        )));
        assert!(picture.contains("graph.dot has the full graph"));
        assert!(box_tops(&picture).is_empty(), "no path boxes");
        let doc = roxmltree::Document::parse(&picture).unwrap();
        let mut rows: Vec<(f64, &str)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text") && n.attribute("text-anchor") == Some("end"))
            .map(|n| {
                (
                    n.attribute("y").unwrap().parse().unwrap(),
                    n.text().unwrap(),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let labels: Vec<&str> = rows.iter().map(|r| r.1).collect();
        assert_eq!(labels.len(), layers.len(), "a row per layer");
        assert_eq!(
            labels.first(),
            Some(&format!("L{}", layers.len() - 1).as_str()),
            "top row: the top layer"
        );
        assert_eq!(labels.last(), Some(&"L0"), "bottom row: the bottom layer");
        // The base is the largest path of the bottom layer.
        assert!(picture.contains("base0 300.0 MiB"));
    }

    #[test]
    fn a_graph_too_wide_to_read_is_drawn_as_layers() {
        // The result refers to 40 leaves directly: 40 boxes side by side.
        let c = synthetic(100, 40);
        assert!(c.paths.len() <= MAX_GRAPH_PATHS);
        let picture = svg(&c, &plan(&c, 20));
        assert!(picture.contains("Too many store paths side by side"));
        assert!(box_tops(&picture).is_empty());
        let root = roxmltree::Document::parse(&picture).unwrap();
        let width: f64 = root
            .root_element()
            .attribute("width")
            .unwrap()
            .parse()
            .unwrap();
        assert!(width <= MAX_GRAPH_WIDTH);
    }

    #[test]
    fn svg_is_standalone_xml() {
        for (c, n) in [
            (golden(), 3),
            (synthetic(30, 14), 12),
            (synthetic(100, 40), 20),
            (synthetic(250, 60), 40),
        ] {
            let picture = svg(&c, &plan(&c, n));
            let doc = roxmltree::Document::parse(&picture).unwrap();
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            assert_eq!(
                root.tag_name().namespace(),
                Some("http://www.w3.org/2000/svg")
            );
            let w: f64 = root.attribute("width").unwrap().parse().unwrap();
            let h: f64 = root.attribute("height").unwrap().parse().unwrap();
            assert_eq!(
                root.attribute("viewBox").unwrap(),
                format!("0 0 {} {}", num(w), num(h))
            );
            // Readable: no text smaller than 11 px.
            for t in doc.descendants().filter(|n| n.has_tag_name("text")) {
                let size: f64 = t.attribute("font-size").unwrap_or("12").parse().unwrap();
                assert!(size >= 11.0);
            }
        }
    }

    #[test]
    fn same_closure_same_bytes() {
        let c = synthetic(100, 40);
        let layers = plan(&c, 20);
        assert_eq!(svg(&c, &layers), svg(&c.clone(), &layers.clone()));
        let big = synthetic(250, 60);
        let layers = plan(&big, 40);
        assert_eq!(svg(&big, &layers), svg(&big, &layers));
        assert_eq!(dot(&big), dot(&big.clone()));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert!(matches!(esc("python3-3.11"), Cow::Borrowed(_)));
        assert_eq!(dot_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        // A name at the limit of what a store path allows stays well formed.
        let mut c = golden();
        let odd = StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a?b=c+d").unwrap();
        let mut info = c.paths[&c.result].clone();
        info.path = odd.clone();
        info.references.clear();
        c.paths.insert(odd.clone(), info);
        c.result = odd;
        let picture = svg(&c, &plan(&c, 3));
        roxmltree::Document::parse(&picture).unwrap();
        assert!(picture.contains(">a?b=c+d<"));
        let long = "x".repeat(80);
        assert_eq!(truncate(&long, 36).chars().count(), 36);
        assert!(truncate(&long, 36).ends_with('…'));
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(121_304), "118.5 KiB");
        assert_eq!(human(5_211_832), "5.0 MiB");
        assert_eq!(human(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(grouped(2000), "2,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }

    /// Writes pictures to look at into `target/pictures/` (render them with
    /// `rsvg-convert`): `cargo test --lib picture -- --ignored`.
    #[test]
    #[ignore = "writes files for a person to look at"]
    fn write_pictures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pictures");
        std::fs::create_dir_all(&dir).unwrap();
        let c = golden();
        std::fs::write(dir.join("golden.svg"), svg(&c, &plan(&c, 3))).unwrap();
        for (name, c, n) in [
            ("synthetic-145", synthetic(100, 44), 20),
            ("tiers-60", generated(60, 3), 20),
            ("synthetic-45", synthetic(30, 14), 12),
            ("synthetic-300", synthetic(230, 69), 40),
            ("synthetic-2000", synthetic(1500, 498), 100),
        ] {
            std::fs::write(dir.join(format!("{name}.svg")), svg(&c, &plan(&c, n))).unwrap();
            std::fs::write(dir.join(format!("{name}.dot")), dot(&c)).unwrap();
        }
    }

    /// Run with `cargo test --release --lib picture -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, for release builds"]
    fn time_10000_paths() {
        let c = generated(10_000, 6);
        let edges = reference_pairs(&c).len();
        assert!(edges >= 50_000, "{edges} references");
        let layers = plan(&c, 100);
        let t = std::time::Instant::now();
        let picture = svg(&c, &layers);
        let svg_time = t.elapsed();
        let t = std::time::Instant::now();
        let graph = dot(&c);
        let dot_time = t.elapsed();
        let small = generated(MAX_GRAPH_PATHS, 6);
        let small_layers = plan(&small, 100);
        let t = std::time::Instant::now();
        let small_picture = svg(&small, &small_layers);
        let small_time = t.elapsed();
        eprintln!(
            "10,000 paths, {edges} references: svg {svg_time:?} ({} bytes), dot {dot_time:?} ({} bytes); \
             {MAX_GRAPH_PATHS}-path graph drawing {small_time:?} ({} bytes)",
            picture.len(),
            graph.len(),
            small_picture.len()
        );
        assert!(!box_tops(&small_picture).is_empty(), "drawn as a graph");
        // The graph drawing's worst case: every path refers to many.
        let dense = generated(MAX_GRAPH_PATHS, 60);
        let dense_layers = plan(&dense, 100);
        let t = std::time::Instant::now();
        let dense_picture = svg(&dense, &dense_layers);
        eprintln!(
            "{MAX_GRAPH_PATHS} paths, {} references: svg {:?} ({} bytes)",
            reference_pairs(&dense).len(),
            t.elapsed(),
            dense_picture.len()
        );
        assert!(svg_time + dot_time < std::time::Duration::from_millis(500));
    }
}

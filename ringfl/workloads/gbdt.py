"""Horizontal histogram gradient-boosted trees on the secure sum (FedLearner's tree model,
data split by rows).

Stages, each one secure sum of a vector every party builds from its own rows:

1. INIT: row count and label sums (base score: mean for squared error, log-odds for
   logistic, log class priors for softmax). Squared error first agrees on the binary
   exponent of max |y| (SCALE), which fixes the gradient unit.
2. SKETCH (bin edges from secure quantile sketches): per feature, a histogram over
   signed binades (`ringfl.workloads.sketch.BINADE_EDGES`), then `sketch_bins` linear
   sub-bins inside every non-empty binade. Cut points are sub-bin edges chosen from the
   pooled sketch by LightGBM's greedy rule (`greedy_cuts`; every edge between non-empty
   sub-bins when there are at most max_bins of them). A row's bin is the number of cuts ≤ x; missing values get bin
   `max_bins`.
3. TREES, level by level: per level one secure sum of the (gradient, hessian) histograms
   of every open node of every tree of the iteration (K trees at once for softmax), for
   all features and bins. Only the smaller child of each split is summed; its sibling is
   the parent minus it; only bins that exist are sent (features with a single bin, and
   the missing bin of features without missing values, are left out). Every party then picks the same splits: the largest gain
   G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ) over features, thresholds and the missing
   values' direction (left or right, learned), with H_L, H_R ≥ min_child_weight; first
   maximum in (direction, feature, threshold) order. Leaves get −lr·G/(H+λ). Children
   at the depth limit take G and H from their parent's split: the deepest level needs no
   sum (a tree of depth D costs D sums, all K trees of an iteration together).

Gradients and hessians are quantized to integers (unit 2^−grad_bits, times 2^E for
squared error where |y| < 2^E) before they are summed, so every histogram is an exact
integer sum (below 2^53 for up to 2^31 rows): the order of addition, the split of rows
among parties and the fixed-point secure sum change nothing. A federated run therefore
grows, bit for bit, the trees of a centralized run of this code on the pooled rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ringfl.engine.scale import agreed_exponent, exponent_onehot
from ringfl.errors import ConfigError, RingflError
from ringfl.workloads.gbdt_model import LOSSES, GBDTModel, Tree
from ringfl.workloads.sketch import BINADE_EDGES, check_range, refine_edges
from ringfl.workloads.spec import check_keys, number

_NB = len(BINADE_EDGES) - 1


@dataclass(frozen=True)
class GBDTParams:
    """Boosting settings (a training task's `[gbdt]` table)."""

    loss: str = "logistic"
    num_classes: int = 2
    learning_rate: float = 0.1
    max_iters: int = 100
    max_depth: int = 6
    max_bins: int = 255
    l2_regularization: float = 1.0
    min_child_weight: float = 1e-3
    min_split_gain: float = 0.0
    sketch_bins: int = 64
    grad_bits: int = 20

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str = "task", where: str = "gbdt."
    ) -> GBDTParams:
        check_keys(raw, set(cls.__dataclass_fields__), where, source)
        p = cls(**raw)
        p.check(source, where)
        return p

    def check(self, source: str = "gbdt", where: str = "") -> None:
        if self.loss not in LOSSES:
            raise ConfigError(
                f"{source}: {where}loss: must be one of {', '.join(LOSSES)}; got {self.loss!r}"
            )
        number(self.num_classes, f"{where}num_classes", source, lo=2, integer=True)
        if self.loss == "logistic" and self.num_classes != 2:
            raise ConfigError(f"{source}: {where}num_classes: logistic loss is for 2 classes")
        number(self.learning_rate, f"{where}learning_rate", source, lo=0)
        number(self.max_iters, f"{where}max_iters", source, lo=1, integer=True)
        number(self.max_depth, f"{where}max_depth", source, lo=1, integer=True)
        number(self.max_bins, f"{where}max_bins", source, lo=2, integer=True)
        if self.max_bins > 65_535:
            raise ConfigError(f"{source}: {where}max_bins: at most 65535")
        number(self.l2_regularization, f"{where}l2_regularization", source, lo=0)
        number(self.min_child_weight, f"{where}min_child_weight", source, lo=0)
        number(self.min_split_gain, f"{where}min_split_gain", source, lo=0)
        number(self.sketch_bins, f"{where}sketch_bins", source, lo=2, integer=True)
        number(self.grad_bits, f"{where}grad_bits", source, lo=4, integer=True)
        if self.grad_bits > 24:
            raise ConfigError(f"{source}: {where}grad_bits: at most 24 (sums must stay exact)")


def greedy_cuts(uppers: np.ndarray, counts: np.ndarray, max_bins: int) -> np.ndarray:
    """At most max_bins − 1 cuts between non-empty sketch bins (upper edges `uppers`,
    pooled `counts`), as LightGBM's greedy bin finding: a sketch bin holding at least a
    mean bin's worth of rows gets a bin of its own, the others are grouped into bins of
    about equal counts (so a heavy value, such as the zeros of an image, does not use up
    the bins of the rest)."""
    c = np.asarray(counts, dtype=np.float64)
    mean = c.sum() / max_bins
    big = c >= mean
    rest_bins = max_bins - int(big.sum())
    rest = float(c[~big].sum())
    mean = rest / rest_bins if rest_bins > 0 else math.inf
    cuts: list[float] = []
    acc = 0.0
    for i in range(len(c) - 1):
        if not big[i]:
            rest -= c[i]
        acc += c[i]
        if big[i] or acc >= mean or (big[i + 1] and acc >= max(1.0, 0.5 * mean)):
            cuts.append(float(uppers[i]))
            acc = 0.0
            if not big[i]:
                rest_bins -= 1
                mean = rest / rest_bins if rest_bins > 0 else math.inf
        if len(cuts) == max_bins - 1:
            break
    return np.array(cuts)


@dataclass
class _Node:
    tree: int  # index into the iteration's trees
    depth: int
    hist: np.ndarray | None = None  # 2 × features × (max_bins + 1), integer units
    totals: np.ndarray | None = None  # the node's G, H in integer units
    parent: int = -1
    sibling: int = -1
    split: dict[str, Any] | None = None
    leaf: float | None = None
    hessian: float = 0.0


class GBDTWorkload:
    """One party's boosting over its rows x (n × features, NaN = missing) and labels y
    (0/1 for logistic, 0..K−1 for softmax, real for squared error)."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, params: GBDTParams, features: list[str] | None = None
    ) -> None:
        params.check()
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ConfigError(f"gbdt: x must be (n, features) and y (n,), got {x.shape}, {y.shape}")
        check_range(x, "gbdt features")
        self.p = params
        self.x = x
        self.y = y
        self.f = x.shape[1]
        self.features = features or [f"x{i}" for i in range(self.f)]
        self.k = params.num_classes if params.loss == "softmax" else 1
        if params.loss == "softmax":
            if not np.isin(y, np.arange(self.k)).all():
                raise ConfigError(f"gbdt: softmax labels must be integers in [0, {self.k})")
        elif params.loss == "logistic":
            if not np.isin(y, (0.0, 1.0)).all():
                raise ConfigError("gbdt: logistic labels must be 0 or 1")
        elif not np.isfinite(y).all():
            raise ConfigError("gbdt: squared-error labels must be finite")
        self.stage = "scale" if params.loss == "squared_error" else "init"
        self.y_exp = 0
        self.n_total = 0
        self.base: np.ndarray = np.zeros(self.k)
        self.cuts: list[np.ndarray] = []
        self.bins: np.ndarray | None = None
        self.raw = np.zeros((len(y), self.k))
        self.trees: list[Tree] = []
        self.iteration = 0
        self.level_sums = 0
        #: per iteration: the pooled mean training loss of the model before it
        self.history: list[dict[str, float]] = []
        self._binades: list[np.ndarray] = []

    # -- the Statistics interface -------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.stage == "done"

    def statistics(self) -> np.ndarray:
        if self.stage == "scale":
            return exponent_onehot(self.y)
        if self.stage == "init":
            return self._init_stats()
        if self.stage == "sketch1":
            return np.concatenate(
                [np.bincount(self._binade_idx(j), minlength=_NB) for j in range(self.f)]
            ).astype(np.float64)
        if self.stage == "sketch2":
            return self._sketch2_stats()
        return self._level_stats()

    def scale_exponent(self) -> int | None:
        """A public bound once the row count is known: sketch counts ≤ n, and quantized
        logistic/softmax gradients and hessians ≤ 2^grad_bits per row."""
        if self.n_total == 0:
            return None
        rows = int(np.ceil(np.log2(self.n_total + 1)))
        if self.stage in ("sketch1", "sketch2"):
            return rows + 1
        if self.stage == "level" and self.p.loss != "squared_error":
            return rows + self.p.grad_bits + 1
        return None

    def apply(self, total: np.ndarray) -> None:
        if self.stage == "scale":
            e = agreed_exponent(total)
            self.y_exp = 0 if e is None else e
            self.stage = "init"
        elif self.stage == "init":
            self._init_apply(total)
            self.stage = "sketch1"
        elif self.stage == "sketch1":
            counts = total.reshape(self.f, _NB)
            self._binades = [np.flatnonzero(np.rint(c) > 0) for c in counts]
            # pooled non-missing rows per feature: does the feature have missing values?
            self.has_missing = np.rint(counts.sum(axis=1)) < self.n_total
            self.stage = "sketch2"
        elif self.stage == "sketch2":
            self._sketch2_apply(total)
            self._bin_rows()
            self._start_iteration()
        else:
            self._level_apply(total)

    def result(self) -> GBDTModel:
        return GBDTModel(
            loss=self.p.loss,
            num_classes=self.p.num_classes,
            features=list(self.features),
            base_score=[float(b) for b in self.base],
            learning_rate=float(self.p.learning_rate),
            trees=self.trees,
            params=asdict(self.p),
        )

    # -- init -----------------------------------------------------------------------------

    def _y_unit(self) -> float:
        """The value of one integer label/gradient unit."""
        e = self.y_exp if self.p.loss == "squared_error" else 0
        return 2.0 ** (e - self.p.grad_bits)

    def _init_stats(self) -> np.ndarray:
        if self.p.loss == "softmax":
            counts = np.bincount(self.y.astype(np.int64), minlength=self.k)
            return np.concatenate([[len(self.y)], counts]).astype(np.float64)
        if self.p.loss == "logistic":
            return np.array([len(self.y), self.y.sum()])
        yq = np.rint(self.y / self._y_unit())
        return np.array([len(self.y), yq.sum()])

    def _init_apply(self, total: np.ndarray) -> None:
        n = float(total[0])
        if n < 1:
            raise RingflError("gbdt: no rows at any party")
        self.n_total = int(n)
        if self.p.loss == "softmax":
            prior = np.maximum(total[1:] / n, 1e-12)
            self.base = np.log(prior)
        elif self.p.loss == "logistic":
            p = min(max(total[1] / n, 1e-12), 1 - 1e-12)
            self.base = np.array([math.log(p / (1 - p))])
        else:
            self.base = np.array([total[1] * self._y_unit() / n])
        self.raw[:] = self.base

    # -- sketch ---------------------------------------------------------------------------

    def _binade_idx(self, j: int) -> np.ndarray:
        v = self.x[:, j]
        v = v[~np.isnan(v)]
        return np.searchsorted(BINADE_EDGES, v, side="right") - 1

    def _sub_edges(self, b: int) -> np.ndarray:
        return refine_edges(float(BINADE_EDGES[b]), float(BINADE_EDGES[b + 1]), self.p.sketch_bins)

    def _sketch2_stats(self) -> np.ndarray:
        s = self.p.sketch_bins
        out = []
        for j in range(self.f):
            v = self.x[:, j]
            v = v[~np.isnan(v)]
            bidx = np.searchsorted(BINADE_EDGES, v, side="right") - 1
            for b in self._binades[j]:
                inside = v[bidx == b]
                edges = self._sub_edges(int(b))
                sub = np.searchsorted(edges, inside, side="right") - 1
                out.append(np.bincount(np.clip(sub, 0, s - 1), minlength=s))
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def _sketch2_apply(self, total: np.ndarray) -> None:
        s, mb = self.p.sketch_bins, self.p.max_bins
        at = 0
        self.cuts = []
        for j in range(self.f):
            uppers, counts = [], []
            for b in self._binades[j]:
                edges = self._sub_edges(int(b))
                c = np.rint(total[at : at + s])
                at += s
                keep = c > 0
                uppers.append(edges[1:][keep])
                counts.append(c[keep])
            if not uppers:
                self.cuts.append(np.zeros(0))
                continue
            up = np.concatenate(uppers)
            cnt = np.concatenate(counts)
            cuts = up[:-1] if len(up) <= mb else greedy_cuts(up, cnt, mb)
            self.cuts.append(np.asarray(cuts, dtype=np.float64))

    def _bin_rows(self) -> None:
        mb = self.p.max_bins
        dtype = np.uint8 if mb < 255 else np.uint16
        bins = np.empty((len(self.y), self.f), dtype=dtype)
        for j in range(self.f):
            v = self.x[:, j]
            b = np.searchsorted(self.cuts[j], v, side="right")
            b[np.isnan(v)] = mb
            bins[:, j] = b
        self.bins = bins
        self.nbins = np.array([len(c) + 1 for c in self.cuts])
        # flat histogram index of (feature, bin), reused for every node
        self._flat = (bins.astype(np.int64) + np.arange(self.f) * (mb + 1)).ravel()
        # the (feature, bin) slots that are summed: bins that exist, and the missing bin of
        # features with missing values; features with one bin cannot split and are left out
        slots = []
        for j in range(self.f):
            if self.nbins[j] >= 2:
                base = j * (mb + 1)
                slots.append(np.arange(base, base + self.nbins[j]))
                if self.has_missing[j]:
                    slots.append(np.array([base + mb]))
        self._slots = np.concatenate(slots) if slots else np.zeros(0, dtype=np.int64)

    # -- trees ----------------------------------------------------------------------------

    def _start_iteration(self) -> None:
        if self.iteration >= self.p.max_iters:
            self.stage = "done"
            return
        self.stage = "level"
        self._gradients()
        self.nodes: list[_Node] = [_Node(tree=c, depth=0) for c in range(self.k)]
        self.pos = np.zeros((self.k, len(self.y)), dtype=np.int64)
        for c in range(self.k):
            self.pos[c] = c  # the root of tree c has node id c
        self.to_sum = list(range(self.k))
        self.level = 0

    def _gradients(self) -> None:
        loss, q = self.p.loss, 2.0**self.p.grad_bits
        if loss == "logistic":
            pr = 1.0 / (1.0 + np.exp(-self.raw[:, 0]))
            g, h = (pr - self.y)[:, None], (pr * (1 - pr))[:, None]
        elif loss == "softmax":
            z = self.raw - self.raw.max(axis=1, keepdims=True)
            e = np.exp(z)
            pr = e / e.sum(axis=1, keepdims=True)
            onehot = np.zeros_like(pr)
            onehot[np.arange(len(self.y)), self.y.astype(np.int64)] = 1.0
            g, h = pr - onehot, pr * (1 - pr)
        else:
            g = (self.raw[:, 0] - self.y)[:, None] / 2.0**self.y_exp
            h = np.ones_like(g)
        self.gq = np.rint(g * q)
        self.hq = np.rint(h * q)
        self.g_unit = self._y_unit()
        self.h_unit = 2.0**-self.p.grad_bits

    def _hist(self, node_id: int) -> np.ndarray:
        """A node's summed slots: gradients, hessians, then the node's totals G, H."""
        nd = self.nodes[node_id]
        rows = np.flatnonzero(self.pos[nd.tree] == node_id)
        width = self.f * (self.p.max_bins + 1)
        if rows.size == 0:
            return np.zeros(2 * len(self._slots) + 2)
        idx = self._flat.reshape(len(self.y), self.f)[rows].ravel()
        gq, hq = self.gq[rows, nd.tree], self.hq[rows, nd.tree]
        g = np.bincount(idx, weights=np.repeat(gq, self.f), minlength=width)
        h = np.bincount(idx, weights=np.repeat(hq, self.f), minlength=width)
        return np.concatenate([g[self._slots], h[self._slots], [gq.sum(), hq.sum()]])

    def _level_stats(self) -> np.ndarray:
        parts = [self._hist(i) for i in self.to_sum]
        if self.level == 0:  # the root level also carries the training loss (reported)
            parts.append(np.array([self._loss_sum()]))
        return np.concatenate(parts)

    def _loss_sum(self) -> float:
        """This party's summed training loss of the current model (cross-entropy, or
        half the squared error)."""
        raw, y = self.raw, self.y
        if self.p.loss == "logistic":
            z = raw[:, 0]
            return float(np.sum(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))
        if self.p.loss == "softmax":
            z = raw - raw.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return float(-logp[np.arange(len(y)), y.astype(np.int64)].sum())
        return float(0.5 * np.sum((raw[:, 0] - y) ** 2))

    def _level_apply(self, total: np.ndarray) -> None:
        self.level_sums += 1
        if self.level == 0:
            self.history.append(
                {"iteration": self.iteration, "train_loss": float(total[-1]) / self.n_total}
            )
            total = total[:-1]
        self.level += 1
        shape = (2, self.f, self.p.max_bins + 1)
        ns = len(self._slots)
        size = 2 * ns + 2
        level_nodes = []
        for i, node_id in enumerate(self.to_sum):
            nd = self.nodes[node_id]
            chunk = total[i * size : (i + 1) * size]
            hist = np.zeros(shape)
            flat = hist.reshape(2, -1)
            flat[0, self._slots], flat[1, self._slots] = chunk[:ns], chunk[ns : 2 * ns]
            nd.hist, nd.totals = hist, chunk[2 * ns :].copy()
            level_nodes.append(node_id)
            if nd.sibling >= 0:  # the sibling is the parent minus this child (exact)
                sib = self.nodes[nd.sibling]
                parent = self.nodes[nd.parent]
                assert parent.hist is not None and parent.totals is not None
                sib.hist = parent.hist - nd.hist
                sib.totals = parent.totals - nd.totals
                level_nodes.append(nd.sibling)
        next_sum = []
        for node_id in sorted(level_nodes):
            nd = self.nodes[node_id]
            split = self._best_split(nd) if nd.depth < self.p.max_depth else None
            if split is None:
                self._make_leaf(nd)
                continue
            nd.split = split
            left = _Node(tree=nd.tree, depth=nd.depth + 1, parent=node_id)
            right = _Node(tree=nd.tree, depth=nd.depth + 1, parent=node_id)
            li, ri = len(self.nodes), len(self.nodes) + 1
            left.sibling, right.sibling = ri, li
            self.nodes += [left, right]
            split["left"], split["right"] = li, ri
            self._route(node_id, split)
            if nd.depth + 1 >= self.p.max_depth:
                # children at the depth limit are leaves: their sums are the split's
                # (exact), so they need no histogram and no secure sum
                self._set_leaf(left, split["g_left"], split["h_left"])
                self._set_leaf(right, split["g_right"], split["h_right"])
                continue
            # sum the child with less hessian; its sibling follows by subtraction
            next_sum.append(li if split["h_left"] <= split["h_right"] else ri)
        for node_id in level_nodes:  # their children are summed from them: parents go
            up = self.nodes[node_id].parent
            if up >= 0:
                self.nodes[up].hist = None
        self.to_sum = next_sum
        if not next_sum:
            self._finish_iteration()

    def _best_split(self, nd: _Node) -> dict[str, Any] | None:
        assert nd.hist is not None
        mb = self.p.max_bins
        gq, hq = nd.hist[0], nd.hist[1]  # features × (mb + 1), integer units
        g = gq * self.g_unit
        h = hq * self.h_unit
        lam = self.p.l2_regularization
        assert nd.totals is not None
        G, H = nd.totals[0] * self.g_unit, nd.totals[1] * self.h_unit
        gl = np.cumsum(g[:, :mb], axis=1)[:, : mb - 1]  # bins ≤ t go left, t = 0..mb−2
        hl = np.cumsum(h[:, :mb], axis=1)[:, : mb - 1]
        gm, hm = g[:, mb : mb + 1], h[:, mb : mb + 1]
        valid_t = np.arange(mb - 1)[None, :] < (self.nbins[:, None] - 1)
        parent = G * G / (H + lam)
        gains = []
        for miss_left in (False, True):
            GL = gl + gm if miss_left else gl
            HL = hl + hm if miss_left else hl
            GR, HR = G - GL, H - HL
            ok = valid_t & (self.p.min_child_weight <= HL) & (self.p.min_child_weight <= HR)
            gain = GL * GL / (HL + lam) + GR * GR / (HR + lam) - parent
            gains.append(np.where(ok, gain, -np.inf))
        allg = np.stack(gains)  # (direction, feature, threshold)
        flat = int(np.argmax(allg))
        top = allg.flat[flat]
        if not np.isfinite(top) or top <= self.p.min_split_gain:
            return None
        d, j, t = np.unravel_index(flat, allg.shape)
        miss_left = bool(d)
        HL = float(hl[j, t] + (hm[j, 0] if miss_left else 0.0))
        GL = float(gl[j, t] + (gm[j, 0] if miss_left else 0.0))
        return {
            "g_left": GL,
            "g_right": float(G - GL),
            "feature": int(j),
            "bin": int(t),
            "threshold": float(self.cuts[j][t]),
            "default_left": miss_left,
            "gain": float(top),
            "h_left": HL,
            "h_right": float(H - HL),
            "hessian": float(H),
        }

    def _route(self, node_id: int, split: dict[str, Any]) -> None:
        assert self.bins is not None
        nd = self.nodes[node_id]
        rows = np.flatnonzero(self.pos[nd.tree] == node_id)
        b = self.bins[rows, split["feature"]]
        left = b <= split["bin"]
        left[b == self.p.max_bins] = split["default_left"]
        self.pos[nd.tree, rows] = np.where(left, split["left"], split["right"])

    def _make_leaf(self, nd: _Node) -> None:
        assert nd.hist is not None
        assert nd.totals is not None
        # integer units times a power of two, summed below 2^53: exact, as in the split
        self._set_leaf(nd, float(nd.totals[0] * self.g_unit), float(nd.totals[1] * self.h_unit))

    def _set_leaf(self, nd: _Node, G: float, H: float) -> None:
        nd.leaf = -self.p.learning_rate * G / (H + self.p.l2_regularization)
        nd.hessian = H
        nd.split = None

    def _finish_iteration(self) -> None:
        # number the nodes of each tree breadth-first from its root and save them
        for c in range(self.k):
            order, out = [c], []
            ids = {}
            i = 0
            while i < len(order):
                node_id = order[i]
                ids[node_id] = i
                nd = self.nodes[node_id]
                if nd.split is not None:
                    order += [nd.split["left"], nd.split["right"]]
                i += 1
            for node_id in order:
                nd = self.nodes[node_id]
                if nd.split is None:
                    out.append({"leaf": nd.leaf, "hessian": nd.hessian})
                else:
                    s = nd.split
                    out.append(
                        {
                            "feature": s["feature"],
                            "threshold": s["threshold"],
                            "default_left": s["default_left"],
                            "left": ids[s["left"]],
                            "right": ids[s["right"]],
                            "gain": s["gain"],
                        }
                    )
            self.trees.append(Tree(c, out))
            leaf = np.array([self.nodes[p].leaf for p in range(len(self.nodes))], dtype=object)
            vals = np.array([v if v is not None else np.nan for v in leaf], dtype=np.float64)
            self.raw[:, c] += vals[self.pos[c]]
        self.iteration += 1
        self._start_iteration()


def fit_gbdt(
    parts: list[tuple[np.ndarray, np.ndarray]],
    params: GBDTParams,
    *,
    secure: bool = True,
    seed: int = 0,
    features: list[str] | None = None,
) -> GBDTModel:
    """Boost on the parties' (x, y) in this process: on the simulated secure ring
    (`secure`, 3+ parties) or with the plain sum (`ringfl.workloads.run`; one party:
    the centralized run)."""
    from ringfl.workloads.run import run_jobs

    ws = [GBDTWorkload(x, y, params, features) for x, y in parts]
    model: GBDTModel = run_jobs(ws, secure=secure, seed=seed)[0]
    return model


__all__ = ["GBDTParams", "GBDTWorkload", "fit_gbdt", "greedy_cuts"]

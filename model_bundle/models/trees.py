"""XGBoost and LightGBM model data, validated before the native library sees it.

Neither library checks this itself: a child or feature index out of range makes them
read out of bounds and crash the process, and LightGBM aborts the process on malformed
model text. XGBoost's JSON is checked tree by tree; LightGBM's model text is parsed into
arrays, checked, and the text handed to ``lightgbm.Booster(model_str=...)`` is rebuilt
from the validated arrays, never the stored text.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import xgboost as xgb

from model_bundle.models.arrays import _array, _check_binary_tree, _integer, _number
from model_bundle.models.inference import LightGBMModel
from onfh_dlr.errors import ClassifierError

# --- XGBoost: validate the model JSON before XGBoost reads it -------------------------------


# XGBoost's "no parent" marker (the largest int32).
_XGB_NO_PARENT: Final = 2147483647
_XGB_TREE_INTS: Final = (
    "left_children",
    "right_children",
    "parents",
    "split_indices",
    "split_type",
)
_XGB_TREE_FLOATS: Final = ("split_conditions", "base_weights", "loss_changes", "sum_hessian")
_XGB_CATEGORY_KEYS: Final = (
    "categories",
    "categories_nodes",
    "categories_segments",
    "categories_sizes",
)
_XGB_NUMBER: Final = re.compile(r"\[?\s*[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?\s*\]?")


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            raise ClassifierError(f"XGBoost model lacks {'.'.join(path)}")
        obj = obj[key]
    return obj


def _int_text(value: Any, what: str) -> int:
    """XGBoost writes model parameters as decimal strings."""
    if not isinstance(value, str) or not value.isdigit():
        raise ClassifierError(f"XGBoost {what} must be a decimal string, not {value!r}")
    return int(value)


def _xgboost_check(model: Any, n_features: int) -> None:
    """Validate the parts of an XGBoost JSON model its loader trusts blindly."""
    learner = _get(model, "learner")
    if _get(learner, "objective", "name") != "binary:logistic":
        raise ClassifierError("XGBoost objective must be binary:logistic")
    params = _get(learner, "learner_model_param")
    if _int_text(_get(params, "num_feature"), "num_feature") != n_features:
        raise ClassifierError(f"XGBoost num_feature is not {n_features}")
    if _int_text(_get(params, "num_class"), "num_class") != 0:
        raise ClassifierError("XGBoost model must be binary (num_class 0)")
    if _int_text(params.get("num_target", "1"), "num_target") != 1:
        raise ClassifierError("XGBoost model must have one target")
    base_score = _get(params, "base_score")
    if not isinstance(base_score, str) or not _XGB_NUMBER.fullmatch(base_score):
        raise ClassifierError(f"XGBoost base_score {base_score!r} is not a number")
    feature_types = learner.get("feature_types", [])
    if not isinstance(feature_types, list) or "c" in feature_types:
        raise ClassifierError("XGBoost categorical features are not supported")
    booster = _get(learner, "gradient_booster")
    if _get(booster, "name") != "gbtree":
        raise ClassifierError("XGBoost booster must be gbtree")
    gbm = _get(booster, "model")
    trees = _get(gbm, "trees")
    if not isinstance(trees, list) or not trees:
        raise ClassifierError("XGBoost model has no trees")
    gbparams = _get(gbm, "gbtree_model_param")
    if _int_text(_get(gbparams, "num_trees"), "num_trees") != len(trees):
        raise ClassifierError("XGBoost num_trees does not match the trees")
    if _int_text(_get(gbparams, "num_parallel_tree"), "num_parallel_tree") != 1:
        raise ClassifierError("XGBoost num_parallel_tree must be 1")
    tree_info = _get(gbm, "tree_info")
    if tree_info != [0] * len(trees):
        raise ClassifierError("XGBoost tree_info must be one 0 per tree (binary)")
    indptr = gbm.get("iteration_indptr")
    if indptr is not None and (
        not isinstance(indptr, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in indptr)
        or indptr[:1] != [0]
        or indptr[-1:] != [len(trees)]
        or any(b < a for a, b in itertools.pairwise(indptr))
    ):
        raise ClassifierError("XGBoost iteration_indptr is inconsistent with the trees")
    cats = gbm.get("cats")
    if cats is not None and (
        not isinstance(cats, Mapping) or any(v not in ([], None, {}) for v in cats.values())
    ):
        raise ClassifierError("XGBoost categorical data are not supported")
    for i, tree in enumerate(trees):
        _xgboost_check_tree(tree, i, n_features)


def _xgboost_check_tree(tree: Any, i: int, n_features: int) -> None:
    what = f"XGBoost tree {i}"
    if not isinstance(tree, Mapping):
        raise ClassifierError(f"{what} must be a JSON object")
    if tree.get("id") != i:
        raise ClassifierError(f"{what} has id {tree.get('id')!r}")
    param = _get(tree, "tree_param")
    n = _int_text(_get(param, "num_nodes"), "num_nodes")
    if n < 1:
        raise ClassifierError(f"{what} has no nodes")
    if _int_text(_get(param, "num_deleted"), "num_deleted") != 0:
        raise ClassifierError(f"{what} has deleted nodes (not supported)")
    if _int_text(_get(param, "num_feature"), "num_feature") != n_features:
        raise ClassifierError(f"{what} num_feature is not {n_features}")
    if _int_text(_get(param, "size_leaf_vector"), "size_leaf_vector") > 1:
        raise ClassifierError(f"{what} has vector leaves (not supported)")
    arrays = {k: _array(tree, k, 1, integer=True) for k in _XGB_TREE_INTS}
    for k in _XGB_TREE_FLOATS:
        arrays[k] = _array(tree, k, 1)
    default_left = tree.get("default_left")
    if not isinstance(default_left, list) or any(v not in (0, 1) for v in default_left):
        raise ClassifierError(f"{what}: default_left must hold 0/1")
    if any(a.shape != (n,) for a in arrays.values()) or len(default_left) != n:
        raise ClassifierError(f"{what}: node arrays must all have {n} entries")
    for k in _XGB_CATEGORY_KEYS:
        if tree.get(k, []) != []:
            raise ClassifierError(f"{what}: categorical splits are not supported")
    if (arrays["split_type"] != 0).any():
        raise ClassifierError(f"{what}: categorical splits are not supported")
    left, right = arrays["left_children"], arrays["right_children"]
    _check_binary_tree(left, right, what)
    parents = arrays["parents"]
    if parents[0] != _XGB_NO_PARENT:
        raise ClassifierError(f"{what}: the root has a parent")
    internal = np.flatnonzero(left != -1)
    if (parents[left[internal]] != internal).any() or (parents[right[internal]] != internal).any():
        raise ClassifierError(f"{what}: parents do not match children")
    split = arrays["split_indices"]
    if ((split < 0) | (split >= n_features)).any():
        raise ClassifierError(f"{what}: a split feature is out of range")


def _xgboost_from_json(model: Mapping[str, Any], n_features: int) -> xgb.XGBClassifier:
    inner = model.get("xgboost_json")
    _xgboost_check(inner, n_features)
    text = json.dumps(inner, allow_nan=False)
    classifier = xgb.XGBClassifier(n_jobs=1)
    try:
        classifier.load_model(bytearray(text.encode("utf-8")))
    except (xgb.core.XGBoostError, ValueError, KeyError, TypeError) as exc:
        raise ClassifierError(f"XGBoost cannot load the model: {exc}") from exc
    return classifier


# --- LightGBM: model text <-> validated arrays -----------------------------------------------

# Keys of a tree in LightGBM's model text (v4), in the order LightGBM writes them.
_LGB_TREE_KEYS: Final = (
    "num_leaves",
    "num_cat",
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "leaf_value",
    "leaf_weight",
    "leaf_count",
    "internal_value",
    "internal_weight",
    "internal_count",
    "is_linear",
    "shrinkage",
)
_LGB_SCALARS: Final = frozenset({"num_leaves", "num_cat", "is_linear", "shrinkage"})
_LGB_INTS: Final = frozenset(
    {
        "num_leaves",
        "num_cat",
        "split_feature",
        "decision_type",
        "left_child",
        "right_child",
        "leaf_count",
        "internal_count",
        "is_linear",
    }
)
# Arrays with one entry per internal node; the others (leaf_*) have one per leaf.
_LGB_INTERNAL: Final = frozenset(
    {
        "split_feature",
        "split_gain",
        "threshold",
        "decision_type",
        "left_child",
        "right_child",
        "internal_value",
        "internal_weight",
        "internal_count",
    }
)
_LGB_HEADER_FIXED: Final = {
    "version": "v4",
    "num_class": "1",
    "num_tree_per_iteration": "1",
    "label_index": "0",
}
_LGB_OBJECTIVE: Final = re.compile(r"binary sigmoid:[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_LGB_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_LGB_INFO: Final = re.compile(r"none|\[([^:\[\]\s]+):([^:\[\]\s]+)\]")


def _lightgbm_parse(text: str) -> dict[str, Any]:
    """LightGBM model text (``model_to_string``) to the validated JSON form."""
    lines = text.split("\n")
    if not lines or lines[0] != "tree":
        raise ClassifierError("not a LightGBM tree model")
    header: dict[str, str] = {}
    i = 1
    while i < len(lines) and not lines[i].startswith("Tree="):
        line = lines[i]
        if line:
            key, sep, value = line.partition("=")
            header[key] = value if sep else ""
        i += 1
    trees: list[dict[str, Any]] = []
    while i < len(lines) and lines[i].startswith("Tree="):
        if lines[i] != f"Tree={len(trees)}":
            raise ClassifierError(f"unexpected LightGBM line {lines[i]!r}")
        i += 1
        raw: dict[str, str] = {}
        while i < len(lines) and lines[i]:
            key, _, value = lines[i].partition("=")
            raw[key] = value
            i += 1
        trees.append(_lightgbm_parse_tree(raw, len(trees)))
        while i < len(lines) and not lines[i]:
            i += 1
    if i >= len(lines) or lines[i] != "end of trees":
        raise ClassifierError("LightGBM model text does not end its trees")
    for key, expected in _LGB_HEADER_FIXED.items():
        if header.get(key) != expected:
            raise ClassifierError(
                f"unsupported LightGBM model: {key}={header.get(key)!r} (need {expected})"
            )
    allowed = {*_LGB_HEADER_FIXED, "max_feature_idx", "objective", "feature_names"}
    allowed |= {"feature_infos", "tree_sizes", "average_output"}
    extra = set(header) - allowed
    if extra:
        raise ClassifierError(f"unsupported LightGBM model header keys: {sorted(extra)}")
    if not header.get("max_feature_idx", "").isdigit():
        raise ClassifierError("LightGBM max_feature_idx is missing")
    model = {
        "objective": header.get("objective", ""),
        "average_output": "average_output" in header,
        "max_feature_idx": int(header["max_feature_idx"]),
        "feature_names": header.get("feature_names", "").split(" "),
        "feature_infos": header.get("feature_infos", "").split(" "),
        "trees": trees,
    }
    _lightgbm_check(model)
    return model


def _lightgbm_parse_tree(raw: Mapping[str, str], index: int) -> dict[str, Any]:
    if set(raw) != set(_LGB_TREE_KEYS):
        raise ClassifierError(
            f"unsupported LightGBM tree {index}: keys {list(raw)} (need {list(_LGB_TREE_KEYS)})"
        )
    tree: dict[str, Any] = {}
    for key in _LGB_TREE_KEYS:
        convert: Callable[[str], Any] = int if key in _LGB_INTS else float
        try:
            values = [convert(v) for v in raw[key].split(" ") if v != ""]
        except ValueError as exc:
            raise ClassifierError(f"LightGBM tree {index}: bad {key}") from exc
        if key not in _LGB_INTS and not all(math.isfinite(v) for v in values):
            raise ClassifierError(f"LightGBM tree {index}: non-finite {key}")
        if key in _LGB_SCALARS:
            if len(values) != 1:
                raise ClassifierError(f"LightGBM tree {index}: {key} must be one value")
            tree[key] = values[0]
        else:
            tree[key] = values
    return tree


def _lightgbm_check(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Validate the JSON form of a LightGBM model (structure, ranges, finiteness).

    Returns
    -------
    list of dict
        Per tree, the validated values (numpy arrays and Python scalars), from which
        :func:`_lightgbm_text` writes the model text.
    """
    expected_keys = {
        "objective",
        "average_output",
        "max_feature_idx",
        "feature_names",
        "feature_infos",
        "trees",
    }
    if set(model) != expected_keys:
        raise ClassifierError(f"LightGBM model must have exactly the keys {sorted(expected_keys)}")
    objective = model["objective"]
    if not isinstance(objective, str) or not _LGB_OBJECTIVE.fullmatch(objective):
        raise ClassifierError(f"unsupported LightGBM objective {objective!r}")
    if not isinstance(model["average_output"], bool):
        raise ClassifierError("LightGBM average_output must be true or false")
    max_idx = _integer(model, "max_feature_idx")
    n_features = max_idx + 1
    if n_features < 1:
        raise ClassifierError("LightGBM max_feature_idx must be >= 0")
    names = model["feature_names"]
    infos = model["feature_infos"]
    if (
        not isinstance(names, list)
        or len(names) != n_features
        or not all(isinstance(s, str) and _LGB_NAME.fullmatch(s) for s in names)
    ):
        raise ClassifierError(f"LightGBM needs {n_features} plain feature names")
    if not isinstance(infos, list) or len(infos) != n_features:
        raise ClassifierError(f"LightGBM needs {n_features} feature infos")
    for info in infos:
        match = _LGB_INFO.fullmatch(info) if isinstance(info, str) else None
        if match is None or (match.group(1) is not None and not _parse_finite_pair(match)):
            raise ClassifierError(f"bad LightGBM feature info {info!r}")
    trees = model["trees"]
    if not isinstance(trees, list) or not trees:
        raise ClassifierError("LightGBM model has no trees")
    return [_lightgbm_check_tree(tree, index, max_idx) for index, tree in enumerate(trees)]


def _parse_finite_pair(match: re.Match[str]) -> bool:
    try:
        return all(math.isfinite(float(match.group(g))) for g in (1, 2))
    except ValueError:
        return False


def _lightgbm_check_tree(tree: Any, index: int, max_idx: int) -> dict[str, Any]:
    what = f"LightGBM tree {index}"
    # Key order is not checked: bundles store JSON with sorted keys.
    if not isinstance(tree, Mapping) or set(tree) != set(_LGB_TREE_KEYS):
        raise ClassifierError(f"{what} must have exactly the keys {list(_LGB_TREE_KEYS)}")
    leaves = _integer(tree, "num_leaves")
    if leaves < 1:
        raise ClassifierError(f"{what}: num_leaves must be >= 1")
    if _integer(tree, "num_cat") != 0 or _integer(tree, "is_linear") != 0:
        raise ClassifierError(f"{what}: categorical splits and linear trees are not supported")
    arrays: dict[str, Any] = {
        "num_leaves": leaves,
        "num_cat": 0,
        "is_linear": 0,
        "shrinkage": _number(tree, "shrinkage"),
    }
    for key in _LGB_TREE_KEYS:
        if key in _LGB_SCALARS:
            continue
        arrays[key] = _array(tree, key, 1, integer=key in _LGB_INTS)
        size = leaves - 1 if key in _LGB_INTERNAL else leaves
        # A one-leaf tree has empty internal arrays and LightGBM writes its leaf_weight
        # empty too.
        ok = arrays[key].shape == (size,) or (
            leaves == 1 and key == "leaf_weight" and arrays[key].size == 0
        )
        if not ok:
            raise ClassifierError(f"{what}: {key} must have {size} entries")
    if leaves == 1:
        return arrays
    decision = arrays["decision_type"]
    # Bit 0: categorical; bit 1: default left; bits 2-3: missing type 0 (none), 1 (zero),
    # 2 (NaN).
    if ((decision < 0) | (decision > 15) | (decision & 1 != 0) | ((decision >> 2) & 3 == 3)).any():
        raise ClassifierError(f"{what}: unsupported decision_type")
    split = arrays["split_feature"]
    if ((split < 0) | (split > max_idx)).any():
        raise ClassifierError(f"{what}: a split feature is out of range")
    # Children: >= 0 is an internal node, < 0 is leaf ~child. Every internal node and
    # every leaf must be reached exactly once from the root (internal node 0).
    seen_internal = np.zeros(leaves - 1, dtype=bool)
    seen_leaf = np.zeros(leaves, dtype=bool)
    stack = [0]
    while stack:
        node = stack.pop()
        if seen_internal[node]:
            raise ClassifierError(f"{what}: node {node} is reached twice (not a tree)")
        seen_internal[node] = True
        for child in (int(arrays["left_child"][node]), int(arrays["right_child"][node])):
            if child >= 0:
                if child >= leaves - 1:
                    raise ClassifierError(f"{what}: a child index is out of range")
                stack.append(child)
            else:
                leaf = ~child
                if leaf >= leaves:
                    raise ClassifierError(f"{what}: a leaf index is out of range")
                if seen_leaf[leaf]:
                    raise ClassifierError(f"{what}: leaf {leaf} is reached twice (not a tree)")
                seen_leaf[leaf] = True
    if not (seen_internal.all() and seen_leaf.all()):
        raise ClassifierError(f"{what}: some nodes are unreachable")
    return arrays


def _lightgbm_text(model: Mapping[str, Any], trees: Sequence[Mapping[str, Any]]) -> str:
    """LightGBM model text rebuilt from a validated model (see :func:`_lightgbm_check`).

    Only what prediction needs is written, from the validated values (never the raw JSON
    values); ``tree_sizes`` (the byte length of each tree block, which LightGBM uses to
    parse trees in parallel) is computed here, so it always matches.
    """

    def fmt(key: str, value: Any) -> str:
        if key in _LGB_INTS:
            ints = [int(value)] if key in _LGB_SCALARS else [int(v) for v in value]
            return " ".join(str(v) for v in ints)
        # repr of a float is the shortest text that reads back as the same double.
        floats = [float(value)] if key in _LGB_SCALARS else [float(v) for v in value]
        return " ".join(repr(v) for v in floats)

    header = [
        "tree",
        *(f"{k}={v}" for k, v in _LGB_HEADER_FIXED.items()),
        f"max_feature_idx={int(model['max_feature_idx'])}",
        f"objective={model['objective']}",
    ]
    if model["average_output"]:
        header.append("average_output")
    header.append("feature_names=" + " ".join(model["feature_names"]))
    header.append("feature_infos=" + " ".join(model["feature_infos"]))
    blocks = [
        f"Tree={i}\n" + "".join(f"{k}={fmt(k, tree[k])}\n" for k in _LGB_TREE_KEYS) + "\n\n"
        for i, tree in enumerate(trees)
    ]
    sizes = " ".join(str(len(b.encode("ascii"))) for b in blocks)
    return (
        "\n".join(header)
        + f"\ntree_sizes={sizes}\n\n"
        + "".join(blocks)
        + "end of trees\n\npandas_categorical:null\n"
    )


def _lightgbm_from_json(model: Mapping[str, Any], hyper: dict[str, Any]) -> LightGBMModel:
    inner = model
    trees = _lightgbm_check(inner)
    text = _lightgbm_text(inner, trees)
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ClassifierError(f"LightGBM cannot load the model: {exc}") from exc
    return LightGBMModel(booster=booster, model=dict(inner), hyperparameters=hyper)

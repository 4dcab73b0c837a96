"""Membership-inference attacks that train a classifier of their own.

SalUn-style MIA-efficacy (:func:`mia_efficacy`, :class:`MIAEfficacy`), the NeurIPS'23
unlearning-challenge starting-kit attack (:func:`loss_attack_cv`) and the shadow-model attack
of Shokri et al. (:func:`run_shadow_attack`). The public names are re-exported by
:mod:`oblivio.audit.mia`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from oblivio.audit._mia_data import AttackResult, AttackType
from oblivio.audit._mia_scores import (
    _model_of,
    entropy,
    fit_clone,
    modified_entropy,
    per_record_loss,
    posteriors,
)
from oblivio.data import Dataset

# -- SalUn MIA-efficacy ---------------------------------------------------------------------
_EFFICACY_FEATURES = ("correctness", "confidence", "entropy", "modified_entropy", "probs")


def _efficacy_feature(P: np.ndarray, y: np.ndarray, feature: str) -> np.ndarray:
    if feature == "correctness":
        return (np.argmax(P, axis=1) == y).astype(np.float64)[:, None]
    if feature == "confidence":
        return P[np.arange(len(y)), y][:, None]
    if feature == "entropy":
        return entropy(P)[:, None]
    if feature == "modified_entropy":
        return modified_entropy(P, y)[:, None]
    if feature == "probs":
        return P
    raise ValueError(f"feature must be one of {_EFFICACY_FEATURES}, got {feature!r}")


@dataclass
class MIAEfficacy:
    """SalUn-style MIA-efficacy of one model on a forget set.

    Attributes
    ----------
    efficacy : float
        Fraction of forget records the attack predicts as non-members (0..1; papers report
        ``100 * efficacy``). Compare with the retrained model's value, not with 1.
    feature : str
        The feature the attack used (``"confidence"`` is the reported variant).
    shadow_accuracy : float
        Accuracy of the attack on its own shadow-train/shadow-test records.
    n_shadow : int
        Shadow records per class (members = non-members = n_shadow).
    n_forget : int
        Number of forget records.
    """

    efficacy: float
    feature: str
    shadow_accuracy: float
    n_shadow: int
    n_forget: int

    @property
    def percent(self) -> float:
        return 100.0 * self.efficacy


def mia_efficacy(
    model: Any,
    *,
    retain: Dataset,
    test: Dataset,
    forget: Dataset,
    feature: str = "confidence",
    seed: int = 0,
    max_shadow: int | None = 5000,
) -> MIAEfficacy:
    """MIA-efficacy of Jia et al. (NeurIPS 2023) and Fan et al. (SalUn, ICLR 2024).

    1. Shadow-train (members, label 1): ``n`` records of ``retain`` drawn at random (seeded;
       the reference code takes the first ``|test|`` records); shadow-test (non-members,
       label 0): ``n`` records of ``test``, where ``n = min(|retain|, |test|, max_shadow)``.
    2. One feature per record: ``correctness`` (argmax = label), ``confidence`` ``p_y``,
       ``entropy``, ``modified_entropy`` (Song & Mittal's definition, not the reference
       routine's, see unlearning-mia.md Sec. 13.2) or the whole probability vector
       ``probs``.
    3. An RBF support-vector classifier (``C = 3``, ``gamma = "auto"``) separates the two.
    4. MIA-efficacy = the share of ``forget`` records it predicts as non-members (the TNR on
       the forget set).

    The ideal value is the one a model retrained without the forget set obtains (about
    0.13 for 10 % random forgetting on CIFAR-10/ResNet-18 in the authors' tables), not 1.
    ``max_shadow`` caps the shadow sets (the SVM is quadratic in their size; None: no cap).
    """
    from sklearn.svm import SVC

    if len(forget) == 0:
        raise ValueError("mia_efficacy needs a non-empty forget set")
    if feature not in _EFFICACY_FEATURES:
        raise ValueError(f"feature must be one of {_EFFICACY_FEATURES}, got {feature!r}")
    n = min(len(retain), len(test))
    if max_shadow is not None:
        n = min(n, int(max_shadow))
    if n < 2:
        raise ValueError(f"retain and test need at least 2 records each, got {n}")
    rng = np.random.default_rng(seed)
    members = retain.take(np.sort(rng.choice(len(retain), n, replace=False)))
    non_members = test.take(np.sort(rng.choice(len(test), n, replace=False)))
    n_classes = max(retain.n_classes, test.n_classes, forget.n_classes)
    Z = np.vstack(
        [
            _efficacy_feature(posteriors(model, d.X, n_classes), d.y, feature)
            for d in (members, non_members)
        ]
    )
    target = np.concatenate([np.ones(n), np.zeros(n)])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(Z, target)
    Z_forget = _efficacy_feature(posteriors(model, forget.X, n_classes), forget.y, feature)
    predicted = attack.predict(Z_forget)
    return MIAEfficacy(
        efficacy=float(np.mean(predicted == 0)),
        feature=feature,
        shadow_accuracy=float(np.mean(attack.predict(Z) == target)),
        n_shadow=n,
        n_forget=len(forget),
    )


def loss_attack_cv(
    model: Any, forget: Dataset, test: Dataset, *, n_splits: int = 10, seed: int = 0
) -> float:
    """Cross-validated accuracy of the NeurIPS'23 unlearning-challenge starting-kit MIA.

    Per-record cross-entropy of ``model`` on ``forget`` (label 1) and ``test`` (label 0),
    both shuffled (seeded) and truncated to the smaller size; a logistic regression on the
    scalar loss; mean accuracy over ``n_splits`` stratified shuffle splits (test share 0.2).
    The target is the retrained model's value (about 0.5 when forget and test records are
    exchangeable), see unlearning-mia.md Sec. 13.1.
    """
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    n = min(len(forget), len(test))
    if n < 5:
        raise ValueError(f"loss_attack_cv needs >= 5 forget and test records, got {n}")
    rng = np.random.default_rng(seed)
    n_classes = max(forget.n_classes, test.n_classes)
    losses = []
    for data in (forget, test):
        pick = rng.permutation(len(data))[:n]
        part = data.take(pick)
        losses.append(per_record_loss(posteriors(model, part.X, n_classes), part.y))
    X = np.concatenate(losses)[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)])
    splitter = StratifiedShuffleSplit(n_splits=n_splits, test_size=0.2, random_state=seed)
    return float(np.mean(cross_val_score(SkLogistic(), X, y, cv=splitter, scoring="accuracy")))


# -- shadow-model attack --------------------------------------------------------------------
def _classifier(name: str | Any, seed: int) -> Any:
    if not isinstance(name, str):
        return copy.deepcopy(name)
    from oblivio.audit._unlearning_features import make_attack_classifier

    return make_attack_classifier(name, seed=seed)


def run_shadow_attack(
    target_model: Any,
    *,
    members: Dataset,
    non_members: Dataset,
    shadow_data: Dataset,
    shadow_model: Any = None,
    n_shadows: int = 4,
    attack_classifier: str | Any = "rf",
    seed: int = 0,
) -> AttackResult:
    """Shadow-model membership inference (Shokri et al., IEEE S&P 2017, Sec. IV).

    ``shadow_data`` (disjoint from the target's training data) is split at random into
    ``n_shadows`` disjoint parts; each part is halved into a shadow training set ("in") and a
    held-out set ("out"), and a shadow model, a clone of ``shadow_model`` (default: the
    target's own template, i.e. the attacker knows the training algorithm), is trained on
    the "in" half. The shadow models' posteriors on their "in" (label 1) and "out" (label 0)
    records train **one attack classifier per class** (Sec. IV-D) on the probability vector.
    The attack then scores the target model's posteriors on ``members`` and ``non_members``.

    Parameters
    ----------
    target_model : model with ``predict_proba``
        The attacked model (or an unlearner; its ``model_`` is used).
    members, non_members : Dataset
        Records known to be in / out of the target's training set (evaluation).
    shadow_data : Dataset
        Attacker's data from the same distribution.
    shadow_model : model, optional
        Template for the shadow models (``clone().fit``; scikit-learn estimators are cloned).
    n_shadows : int
        Number of shadow models (>= 1).
    attack_classifier : {"dt", "rf", "lr", "mlp"} or sklearn classifier
        Per-class attack model (see :func:`oblivio.audit.unlearning_attack.make_attack_classifier`).
    seed : int
        Seed of the data split and the attack classifiers.

    Returns
    -------
    AttackResult
        With ``attack_type="shadow"``.
    """
    if n_shadows < 1:
        raise ValueError(f"n_shadows must be >= 1, got {n_shadows!r}")
    if len(shadow_data) < 4 * n_shadows:
        raise ValueError(
            f"shadow_data has {len(shadow_data)} records, too few for {n_shadows} shadow models"
        )
    template = _model_of(target_model) if shadow_model is None else shadow_model
    n_classes = max(members.n_classes, non_members.n_classes, shadow_data.n_classes)
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(len(shadow_data)), n_shadows)
    rows, member, classes = [], [], []
    for part in parts:
        half = len(part) // 2
        inside, outside = shadow_data.take(part[:half]), shadow_data.take(part[half:])
        shadow = fit_clone(template, inside)
        for data, flag in ((inside, 1), (outside, 0)):
            rows.append(posteriors(shadow, data.X, n_classes))
            member.append(np.full(len(data), flag))
            classes.append(np.asarray(data.y))
    X_attack, y_attack, c_attack = np.vstack(rows), np.concatenate(member), np.concatenate(classes)
    target_rows = np.vstack(
        [
            posteriors(target_model, members.X, n_classes),
            posteriors(target_model, non_members.X, n_classes),
        ]
    )
    target_member = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    target_class = np.concatenate([members.y, non_members.y]).astype(np.int64)
    scores = np.full(len(target_rows), float(np.mean(y_attack)))
    for c in range(n_classes):
        train_rows = c_attack == c
        test_rows = target_class == c
        if not np.any(test_rows) or not np.any(train_rows):
            continue
        if len(np.unique(y_attack[train_rows])) < 2:
            scores[test_rows] = float(y_attack[train_rows][0])
            continue
        attack = _classifier(attack_classifier, seed)
        attack.fit(X_attack[train_rows], y_attack[train_rows])
        scores[test_rows] = attack.predict_proba(target_rows[test_rows])[:, 1]
    return AttackResult.from_scores(AttackType.SHADOW.value, target_member, scores)

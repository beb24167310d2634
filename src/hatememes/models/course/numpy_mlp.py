"""The course MLP: every layer's forward and backward pass written by hand in numpy, no autograd.

The CS7643 assignment-1 network (Linear, ReLU, Sigmoid, Softmax, cross-entropy, L2 regularisation,
SGD with momentum as in Sutskever et al. 2013 and `torch.optim.SGD`) as an early-fusion classifier on
CLIP features: the L2-normalised image and text embeddings are concatenated and fed to the MLP, which
ends in one logit trained with binary cross-entropy (the 2-class softmax-CE is here too, gradient-checked).

    mlp = CourseMLP.build(CourseMLPConfig(), context)
    mlp.fit(train_items, dev_items)          # keeps the epoch with the best dev AUROC
    probs = mlp.predict_proba(test_items)    # (N,)

`torch_twin(config, train, dev)` trains the same network in torch from the same initial weights, on
the same batches with the same optimiser, and returns both loss trajectories: the hand-written
backward pass is right exactly when they agree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from hatememes.metrics import auroc


class Linear:
    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator, dtype=np.float32):
        bound = 1.0 / np.sqrt(in_features)  # torch.nn.Linear's default (Kaiming-uniform, a=sqrt(5))
        self.params = {
            "weight": rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype),
            "bias": rng.uniform(-bound, bound, out_features).astype(dtype),
        }
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:  # (N, I) -> (N, O)
        self.x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, grad: np.ndarray) -> np.ndarray:  # (N, O) -> (N, I)
        self.grads = {"weight": grad.T @ self.x, "bias": grad.sum(0)}
        return grad @ self.params["weight"]


class ReLU:
    params: dict = {}  # no parameters
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self.mask


class Sigmoid:
    params: dict = {}  # no parameters
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.out = sigmoid(x)
        return self.out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self.out * (1.0 - self.out)


class Softmax:
    """Softmax over the last axis; backward is the Jacobian-vector product s * (g - <g, s>)."""

    params: dict = {}  # no parameters
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        exp = np.exp(x - x.max(-1, keepdims=True))
        self.out = exp / exp.sum(-1, keepdims=True)
        return self.out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self.out * (grad - (grad * self.out).sum(-1, keepdims=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + e^-x) without overflow


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of (N, K) logits against (N,) class indices, and its gradient (N, K)."""
    n = len(labels)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    grad = np.exp(log_probs)
    grad[np.arange(n), labels] -= 1.0
    return float(-log_probs[np.arange(n), labels].mean()), grad / n


def bce_with_logits(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of (N,) logits against (N,) 0/1 labels, and its gradient (N,)."""
    loss = np.logaddexp(0.0, logits) - labels * logits  # -log sigmoid(z) for y=1, -log(1-sigmoid(z)) for y=0
    return float(loss.mean()), (sigmoid(logits) - labels) / len(labels)


def l2_penalty(weights: list[np.ndarray], weight_decay: float) -> tuple[float, list[np.ndarray]]:
    """0.5 * weight_decay * sum ||W||^2 and its gradients (what torch's SGD weight_decay adds)."""
    loss = 0.5 * weight_decay * sum(float((w * w).sum()) for w in weights)
    return loss, [weight_decay * w for w in weights]


class SGD:
    """torch.optim.SGD semantics (dampening 0): buf = momentum * buf + grad; param -= lr * buf."""

    def __init__(self, lr: float, momentum: float):
        self.lr, self.momentum = lr, momentum
        self.buffers: dict[tuple[int, str], np.ndarray] = {}

    def step(self, layers: list) -> None:
        for index, layer in enumerate(layers):
            for name, param in layer.params.items():
                buf = self.buffers.get((index, name), 0.0) * self.momentum + layer.grads[name]
                self.buffers[(index, name)] = buf
                param -= self.lr * buf  # in place, so layer.params stays the same array


class Network:
    """A sequence of layers; parameter names '<index>.<name>' match the same nn.Sequential's state_dict."""

    def __init__(self, layers: list):
        self.layers = layers

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def state(self) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": p.copy() for i, layer in enumerate(self.layers) for name, p in layer.params.items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for i, layer in enumerate(self.layers):
            for name, param in layer.params.items():
                param[...] = state[f"{i}.{name}"]

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:  # (N, ...) -> (N,)
        return np.concatenate([self.forward(x[i : i + batch_size])[:, 0] for i in range(0, len(x), batch_size)])


def make_mlp(in_features: int, hidden_sizes: tuple[int, ...], seed: int, dtype=np.float32) -> Network:
    rng = np.random.default_rng([seed, 0])
    sizes, layers = (in_features, *hidden_sizes), []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [Linear(fan_in, fan_out, rng, dtype), ReLU()]
    return Network([*layers, Linear(sizes[-1], 1, rng, dtype)])


def train_step(net: Network, optimizer: SGD, x: np.ndarray, labels: np.ndarray, weight_decay: float) -> float:
    """One SGD step on BCE + L2 (weights only, not biases); returns the regularised loss."""
    loss, grad = bce_with_logits(net.forward(x)[:, 0], labels)  # logits (B,)
    net.backward(grad[:, None])
    weighted = [layer for layer in net.layers if "weight" in layer.params]
    penalty, penalty_grads = l2_penalty([layer.params["weight"] for layer in weighted], weight_decay)
    for layer, extra in zip(weighted, penalty_grads, strict=True):
        layer.grads["weight"] = layer.grads["weight"] + extra
    optimizer.step(net.layers)
    return loss + penalty


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def dev_auroc(labels: np.ndarray, logits: np.ndarray) -> float:
    """AUROC on the labelled items; nan when they hold fewer than two classes."""
    known = labels >= 0
    if len(np.unique(labels[known])) < 2:
        return float("nan")
    return auroc(labels[known], logits[known])


def fit_network(net: Network, data: tuple[np.ndarray, ...], config) -> dict[str, list[float]]:
    """SGD+momentum for config.epochs; restores the epoch with the best dev AUROC (the last if dev has none)."""
    x, labels, dev_x, dev_labels = data
    rng, optimizer = np.random.default_rng([config.seed, 1]), SGD(config.lr, config.momentum)
    history: dict[str, list[float]] = {"loss": [], "dev_auroc": []}
    best_auroc, best_state = -np.inf, net.state()
    for _ in range(config.epochs):
        for batch in epoch_batches(len(labels), config.batch_size, rng):
            history["loss"].append(train_step(net, optimizer, x[batch], labels[batch], config.weight_decay))
        auroc = dev_auroc(dev_labels, net.logits(dev_x))
        history["dev_auroc"].append(auroc)
        if np.isnan(auroc) or auroc > best_auroc:
            best_auroc, best_state = (-np.inf if np.isnan(auroc) else auroc), net.state()
    net.load_state(best_state)
    return history


def early_fusion(items: list[dict], dtype=np.float32) -> np.ndarray:
    """[clip_image / ||clip_image||, clip_text / ||clip_text||] for each item: (N, 2D)."""
    image = np.stack([np.asarray(item["clip_image"], dtype=np.float64) for item in items])  # (N, D)
    text = np.stack([np.asarray(item["clip_text"], dtype=np.float64) for item in items])  # (N, D)
    image /= np.linalg.norm(image, axis=1, keepdims=True).clip(1e-12)
    text /= np.linalg.norm(text, axis=1, keepdims=True).clip(1e-12)
    return np.concatenate([image, text], axis=1).astype(dtype)


def item_labels(items: list[dict], dtype=np.float32) -> np.ndarray:
    return np.array([item["label"] for item in items], dtype=dtype)


@dataclass(frozen=True)
class CourseMLPConfig:
    hidden_sizes: tuple[int, ...] = (256,)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1.0e-4
    epochs: int = 30
    batch_size: int = 64
    seed: int = 0  # initial weights and batch order
    seeds: tuple[int, ...] = ()  # more seeds to train it with, from scratch (as a torch model's loop.seeds)


class CourseMLP:
    """Fitted classifier: the numpy MLP on early-fused CLIP features."""

    Config = CourseMLPConfig
    inputs = ("clip",)

    def __init__(self, config: CourseMLPConfig, net: Network | None = None):
        self.config, self.net = config, net
        self.history: dict[str, list[float]] = {}

    @classmethod
    def build(cls, config: CourseMLPConfig, context=None) -> CourseMLP:
        return cls(config)

    def fit(self, train: list[dict], dev: list[dict]) -> None:
        x = early_fusion(train)
        self.net = make_mlp(x.shape[1], self.config.hidden_sizes, self.config.seed)
        data = (x, item_labels(train), early_fusion(dev), item_labels(dev))
        self.history = fit_network(self.net, data, self.config)

    def predict_proba(self, items: list[dict]) -> np.ndarray:  # (N,)
        return sigmoid(self.net.logits(early_fusion(items)))

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.net.state(), str(directory / "model.safetensors"))
        in_features = self.net.layers[0].params["weight"].shape[1]
        config = {"config": asdict(self.config), "in_features": in_features}
        (directory / "config.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CourseMLP:
        saved = json.loads((Path(directory) / "config.json").read_text())
        config = CourseMLPConfig(**{**saved["config"], "hidden_sizes": tuple(saved["config"]["hidden_sizes"])})
        net = make_mlp(saved["in_features"], config.hidden_sizes, config.seed)
        net.load_state(load_file(str(Path(directory) / "model.safetensors")))
        return cls(config, net)


def torch_twin(config: CourseMLPConfig, train: list[dict], dev: list[dict]) -> dict[str, list[float]]:
    """Train the numpy MLP and a same-shaped torch MLP (same initial weights, batches, SGD+momentum, L2).

    Both in float64. Returns the per-step loss trajectories and per-epoch dev AUROCs of both; they
    agree to ~1e-12 when every hand-written backward pass is right."""
    import torch

    x, labels = early_fusion(train, np.float64), item_labels(train, np.float64)
    dev_x, dev_labels = early_fusion(dev, np.float64), item_labels(dev, np.float64)
    net = make_mlp(x.shape[1], config.hidden_sizes, config.seed, np.float64)
    sizes, modules = (x.shape[1], *config.hidden_sizes), []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        modules += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    twin = torch.nn.Sequential(*modules, torch.nn.Linear(sizes[-1], 1)).double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in net.state().items()})
    optimizer = torch.optim.SGD(twin.parameters(), lr=config.lr, momentum=config.momentum)
    rng, history = np.random.default_rng([config.seed, 1]), {"torch_loss": [], "torch_dev_auroc": []}
    for _ in range(config.epochs):
        for batch in epoch_batches(len(labels), config.batch_size, rng):
            logits = twin(torch.from_numpy(x[batch]))[:, 0]  # (B,)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels[batch]))
            weights = [p for name, p in twin.named_parameters() if name.endswith("weight")]
            loss = loss + 0.5 * config.weight_decay * sum((w * w).sum() for w in weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history["torch_loss"].append(loss.item())
        with torch.no_grad():
            history["torch_dev_auroc"].append(dev_auroc(dev_labels, twin(torch.from_numpy(dev_x))[:, 0].numpy()))
    numpy_history = fit_network(net, (x, labels, dev_x, dev_labels), config)
    return {"numpy_loss": numpy_history["loss"], "numpy_dev_auroc": numpy_history["dev_auroc"], **history}

"""The course CNN: convolution, max-pooling and ReLU with forward and backward written by hand in numpy.

The CS7643 assignment-2 network (a LeNet-style stack, LeCun et al. 1998: [Conv -> ReLU -> MaxPool] x N,
then flatten -> Linear -> ReLU -> Linear) as an image-only classifier on small resized memes.
Convolution is im2col + one matrix product (Chellapilla et al. 2006); im2col reads the padded input
through numpy stride tricks and col2im loops over the k*k kernel offsets, never over pixels.

    cnn = CourseCNN.build(CourseCNNConfig(image_size=32), context)
    cnn.fit(train_items, dev_items)                  # items carry "image": a PIL RGB image
    probs = cnn.predict_proba(test_items)            # (N,)
    logits, grads = cnn.input_gradient(pixel_values) # d logit / d pixels, for saliency and FGSM
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from safetensors.numpy import load_file, save_file

from hatememes.models.course.numpy_mlp import Linear, Network, ReLU, fit_network, item_labels, sigmoid


def output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


def im2col(x: np.ndarray, kernel_size: int, stride: int, padding: int) -> np.ndarray:
    """(B, C, H, W) -> (C*k*k, B*Ho*Wo): every receptive field as a column, rows ordered (c, i, j)."""
    b, c = x.shape[:2]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(padded, (kernel_size, kernel_size), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * kernel_size**2, -1)  # windows: (B, C, Ho, Wo, k, k)


def col2im(cols: np.ndarray, shape: tuple, kernel_size: int, stride: int, padding: int) -> np.ndarray:
    """The adjoint of im2col: (C*k*k, B*Ho*Wo) -> (B, C, H, W), overlapping fields summed."""
    b, c, h, w = shape
    k = kernel_size
    ho, wo = output_size(h, k, stride, padding), output_size(w, k, stride, padding)
    cols = cols.reshape(c, k, k, b, ho, wo)
    padded = np.zeros((c, b, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    for i in range(k):  # k*k kernel offsets; each adds a whole (C, B, Ho, Wo) block
        for j in range(k):
            padded[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += cols[:, i, j]
    return padded[:, :, padding : padding + h, padding : padding + w].transpose(1, 0, 2, 3)


class Conv2D:
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, rng=None, dtype=np.float32):
        rng = rng if rng is not None else np.random.default_rng(0)
        bound = 1.0 / np.sqrt(in_channels * kernel_size**2)  # torch.nn.Conv2d's default init
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.params = {
            "weight": rng.uniform(-bound, bound, shape).astype(dtype),
            "bias": rng.uniform(-bound, bound, out_channels).astype(dtype),
        }
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:  # (B, C, H, W) -> (B, O, Ho, Wo)
        self.shape = x.shape
        self.cols = im2col(x, self.kernel_size, self.stride, self.padding)  # (C*k*k, B*Ho*Wo)
        weight = self.params["weight"].reshape(len(self.params["bias"]), -1)  # (O, C*k*k)
        out = weight @ self.cols + self.params["bias"][:, None]  # (O, B*Ho*Wo): one matrix product
        ho = output_size(x.shape[2], self.kernel_size, self.stride, self.padding)
        wo = output_size(x.shape[3], self.kernel_size, self.stride, self.padding)
        return out.reshape(-1, x.shape[0], ho, wo).transpose(1, 0, 2, 3)

    def backward(self, grad: np.ndarray) -> np.ndarray:  # (B, O, Ho, Wo) -> (B, C, H, W)
        o = grad.shape[1]
        grad = grad.transpose(1, 0, 2, 3).reshape(o, -1)  # (O, B*Ho*Wo)
        weight = self.params["weight"].reshape(o, -1)  # (O, C*k*k)
        self.grads = {"weight": (grad @ self.cols.T).reshape(self.params["weight"].shape), "bias": grad.sum(1)}
        return col2im(weight.T @ grad, self.shape, self.kernel_size, self.stride, self.padding)


class MaxPool2D:
    params: dict = {}  # no parameters
    grads: dict = {}

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.kernel_size, self.stride = kernel_size, stride or kernel_size

    def forward(self, x: np.ndarray) -> np.ndarray:  # (B, C, H, W) -> (B, C, Ho, Wo)
        k, s = self.kernel_size, self.stride
        ho, wo = output_size(x.shape[2], k, s, 0), output_size(x.shape[3], k, s, 0)
        out = x[:, :, : s * ho : s, : s * wo : s]  # offset (0, 0) of every window
        self.shape, self.argmax = x.shape, np.zeros(out.shape, dtype=np.int8)  # which offset won
        for offset in range(1, k * k):  # k*k offsets, each compared as a whole (B, C, Ho, Wo) block
            i, j = divmod(offset, k)
            candidate = x[:, :, i : i + s * ho : s, j : j + s * wo : s]
            better = candidate > out  # ties keep the first offset, as torch does
            out = np.where(better, candidate, out)  # a select, not a masked copy: 5x faster, the same values
            self.argmax = np.where(better, np.int8(offset), self.argmax)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:  # (B, C, Ho, Wo) -> (B, C, H, W)
        k, s = self.kernel_size, self.stride
        ho, wo = grad.shape[2:]
        dx = np.zeros(self.shape, dtype=grad.dtype)
        for offset in range(k * k):  # route each gradient to the input that won its window
            i, j = divmod(offset, k)
            dx[:, :, i : i + s * ho : s, j : j + s * wo : s] += grad * (self.argmax == offset)
        return dx


class Flatten:
    params: dict = {}  # no parameters
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:  # (B, C, H, W) -> (B, C*H*W)
        self.shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(self.shape)


@dataclass(frozen=True)
class CourseCNNConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    stride: int = 1
    hidden_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1.0e-4
    epochs: int = 10
    batch_size: int = 32
    seed: int = 0  # initial weights and batch order
    seeds: tuple[int, ...] = ()  # more seeds to train it with, from scratch (as a torch model's loop.seeds)


def make_cnn(config: CourseCNNConfig, dtype=np.float32) -> Network:
    """[Conv(k, stride, padding k//2) -> ReLU -> MaxPool(2)] per channel count -> Linear -> ReLU -> Linear(1).

    The layer indices match the same torch nn.Sequential (Conv2d, ReLU, MaxPool2d, ..., Flatten, Linear, ...)."""
    rng = np.random.default_rng([config.seed, 0])
    layers, in_channels, size = [], 3, config.image_size
    for out_channels in config.channels:
        conv = Conv2D(in_channels, out_channels, config.kernel_size, config.stride, config.kernel_size // 2, rng, dtype)
        layers += [conv, ReLU(), MaxPool2D(2)]
        size = output_size(size, config.kernel_size, config.stride, config.kernel_size // 2) // 2
        in_channels = out_channels
    linear = Linear(in_channels * size * size, config.hidden_size, rng, dtype)
    return Network([*layers, Flatten(), linear, ReLU(), Linear(config.hidden_size, 1, rng, dtype)])


def pixel_values(items: list[dict], image_size: int) -> np.ndarray:
    """Each item's image resized to image_size^2, scaled to [-1, 1]: (N, 3, S, S) float32."""
    images = [item["image"].convert("RGB").resize((image_size, image_size), Image.BILINEAR) for item in items]
    pixels = np.stack([np.asarray(image, dtype=np.float32) for image in images])  # (N, S, S, 3)
    return (pixels / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()


class CourseCNN:
    """Fitted classifier: the numpy CNN on the meme image alone."""

    Config = CourseCNNConfig
    inputs = ("image",)

    def __init__(self, config: CourseCNNConfig, net: Network | None = None):
        self.config, self.net = config, net if net is not None else make_cnn(config)
        self.history: dict[str, list[float]] = {}

    @classmethod
    def build(cls, config: CourseCNNConfig, context=None) -> CourseCNN:
        return cls(config)

    def fit(self, train: list[dict], dev: list[dict]) -> None:
        size = self.config.image_size
        data = (pixel_values(train, size), item_labels(train), pixel_values(dev, size), item_labels(dev))
        self.net = make_cnn(self.config)
        self.history = fit_network(self.net, data, self.config)

    def predict_proba(self, items: list[dict]) -> np.ndarray:  # (N,)
        return sigmoid(self.net.logits(pixel_values(items, self.config.image_size), batch_size=64))

    def input_gradient(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N,) and d logit_n / d pixels_n (N, 3, S, S) for pixels in the [-1, 1] scale of `pixel_values`."""
        logits = self.net.forward(pixels.astype(np.float32))[:, 0]
        return logits, self.net.backward(np.ones((len(pixels), 1), dtype=np.float32))

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.net.state(), str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps({"config": asdict(self.config)}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CourseCNN:
        saved = json.loads((Path(directory) / "config.json").read_text())["config"]
        model = cls(CourseCNNConfig(**{**saved, "channels": tuple(saved["channels"])}))
        model.net.load_state(load_file(str(Path(directory) / "model.safetensors")))
        return model

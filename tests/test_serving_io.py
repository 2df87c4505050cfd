"""The serving core's input forms and typed answers without Ray: images (base64 and multipart), .npy, nested
lists and table rows into the model; one answer per task kind out; /v1/select in each task's metric; and a
bounded fuzz of malformed inputs, every one a 4xx naming the field."""

from __future__ import annotations

import base64
import io
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_inputs_spec import png_header_only
from tolerance import assert_close

from pareto_ray.checkpoint import DatasetSpec, save_checkpoint
from pareto_ray.config import load_config
from pareto_ray.data import load_dataset
from pareto_ray.fronts import evaluate_front
from pareto_ray.inputs_spec import InputSpec, TabularEncoder, encode_png
from pareto_ray.loop import build_optimizer, train_epoch
from pareto_ray.methods import build_model
from pareto_ray.preferences import simplex_grid
from pareto_ray.serving.engine import DIGITS_INPUT, Engine, Frontend, ModelSummary
from pareto_ray.serving.inputs import INPUT_SHAPE
from pareto_ray.serving.loading import load_served_model
from pareto_ray.serving.outputs import mask_png, present
from pareto_ray.serving.predictors import BatchItem, ItemResult
from pareto_ray.serving.schemas import OutputOptions, PredictRequest, RequestError, SelectRequest, ServeSettings
from pareto_ray.serving.selection import select_preference
from pareto_ray.tasks import Task

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # examples/ (the wine model)
from examples.wine import FEATURES  # noqa: E402

DIGITS = Frontend(ModelSummary(num_tasks=2, front=None), ServeSettings(max_inputs=8, max_image_pixels=4096,
                                                                        max_request_pixels=8192))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def npy(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, arr)
    return b64(buf.getvalue())


def digits(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *INPUT_SHAPE), dtype=np.uint8)


def multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    """A ``multipart/form-data`` body as ``curl -F`` sends it: (name, filename or None, content) per part."""
    out = b""
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def parse(frontend: Frontend, body: dict) -> BatchItem:
    return frontend.parse_predict(json.dumps(body).encode())


def refused(frontend: Frontend, body: bytes | dict, content_type: str | None = None) -> RequestError:
    with pytest.raises(RequestError) as err:
        frontend.parse_predict(json.dumps(body).encode() if isinstance(body, dict) else body, content_type)
    return err.value


# ----------------------------------------------------------------------------- inputs

def test_every_input_form_gives_the_training_normalization():
    stored = digits()
    want = DIGITS.spec.normalize(torch.from_numpy(stored))
    pref = [0.5, 0.5]
    forms = {
        "images": {"images": [b64(encode_png(s)) for s in stored]},
        "data url": {"images": ["data:image/png;base64," + b64(encode_png(s)) for s in stored]},
        "npy": {"npy": npy(want.numpy())},
        "inputs": {"inputs": want.tolist()},
    }
    for name, form in forms.items():
        item = parse(DIGITS, {"preference": pref, **form})
        assert_close(item.inputs, want, what=name)
        assert item.preference == (0.5, 0.5)
    body, ctype = multipart([("preference", None, b"[0.5, 0.5]"), ("output", None, b'{"top_k": 2}'),
                             *[("images", f"{i}.png", encode_png(s)) for i, s in enumerate(stored)]])
    item = DIGITS.parse_predict(body, ctype)
    assert_close(item.inputs, want, what="multipart") and item.output.top_k == 2
    body, ctype = multipart([("preference", None, b"[0.5, 0.5]"), ("npy", "x.npy", base64.b64decode(npy(want.numpy())))])
    assert_close(DIGITS.parse_predict(body, ctype).inputs, want, what="multipart npy")


def test_an_rgb_or_oversized_image_for_a_gray_model_is_converted():
    rgb = Image.fromarray(np.full((56, 56, 3), 200, np.uint8))
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    item = parse(DIGITS, {"preference": [0.5, 0.5], "images": [b64(buf.getvalue())]})
    assert item.inputs.shape == (1, *INPUT_SHAPE)
    assert_close(item.inputs, DIGITS.spec.normalize(torch.full((1, *INPUT_SHAPE), 200, dtype=torch.uint8)))


@pytest.mark.parametrize("body, status, field, words", [
    ({"preference": [0.5, 0.5]}, 422, "inputs", "no inputs"),
    ({"preference": [0.5, 0.5], "inputs": [[[[0.0] * 28] * 28]], "images": ["AAAA"]}, 422, "images", "one input form"),
    ({"preference": [0.5, 0.5], "images": ["not base64!"]}, 422, "images.0", "base64"),
    ({"preference": [0.5, 0.5], "images": [""]}, 422, "images.0", "empty"),
    ({"preference": [0.5, 0.5], "images": [b64(b"GIF89a....")]}, 422, "images.0", "PNG or JPEG"),
    ({"preference": [0.5, 0.5], "images": [b64(encode_png(np.zeros((1, 100, 100), np.uint8)))]}, 413, "images.0",
     "over the limit"),
    ({"preference": [0.5, 0.5], "images": [b64(encode_png(np.zeros((1, 60, 60), np.uint8)))] * 3}, 413, "images",
     "in all"),
    ({"preference": [0.5, 0.5], "images": []}, 422, "images", "empty batch"),
    ({"preference": [0.5, 0.5], "images": [b64(encode_png(digits(1)[0]))] * 9}, 422, "images", "limit of 8"),
    ({"preference": [0.5, 0.5], "npy": npy(np.zeros((2, 1, 28, 27), np.float32))}, 422, "npy", "shape"),
    ({"preference": [0.5, 0.5], "npy": npy(np.full((1, 1, 28, 28), np.nan, np.float32))}, 422, "npy", "finite"),
    ({"preference": [0.5, 0.5], "npy": b64(b"\x93NUMPY\x01\x00junk")}, 422, "npy", ".npy"),
    ({"preference": [0.5, 0.5], "rows": [{"a": 1}]}, 422, "rows", "not table rows"),
    ({"preference": [0.5, 0.5], "images": [b64(encode_png(digits(1)[0]))], "output": {"top_k": 0}}, 422,
     "output.top_k", ""),
])
def test_bad_inputs_get_4xx_naming_the_field(body, status, field, words):
    err = refused(DIGITS, body)
    assert (err.status, err.field) == (status, field) and words in err.message


def test_bad_multipart_bodies_get_4xx_naming_the_field():
    png = encode_png(digits(1)[0])
    cases = [
        (multipart([("preference", None, b"[0.5, 0.5]"), ("images", "a.png", b"")]), 422, "images.0"),  # zero bytes
        (multipart([("images", "a.png", png)]), 422, "preference"),
        (multipart([("preference", None, b"[0.5, 0.5]"), ("photo", "a.png", png)]), 422, "photo"),
        (multipart([("preference", None, b"[0.5, 0.5]"), ("images", "a.png", png), ("npy", "x.npy", b"")]), 422, "npy"),
        (multipart([("preference", None, b"[0.5, 0.6]"), ("images", "a.png", png)]), 422, "preference"),
        ((b"--b0undary\r\nno headers", "multipart/form-data; boundary=b0undary"), 400, "body"),
        ((b"", "multipart/form-data"), 400, "Content-Type"),
    ]
    for (body, ctype), status, field in cases:
        err = refused(DIGITS, body, ctype)
        assert (err.status, err.field) == (status, field), (field, err)


TABLE = {"alcohol": [12.0, 13.0, 14.0], "color": ["red", "white", "red"], "organic": [True, False, True]}
ENCODER = TabularEncoder.fit(TABLE, categorical=["color"], boolean=["organic"])
ROWS = Frontend(ModelSummary(num_tasks=2, front=None, input_shape=(ENCODER.width,),
                             input=InputSpec("tabular", (ENCODER.width,), encoder=ENCODER).to_dict()))


def test_rows_are_encoded_with_the_checkpoints_encoder():
    rows = [{"alcohol": 13.0, "color": "white", "organic": False}, {"alcohol": 14.0, "color": "red", "organic": True}]
    item = parse(ROWS, {"preference": [0.5, 0.5], "rows": rows})
    assert torch.equal(item.inputs, torch.from_numpy(ENCODER.encode_columns(TABLE))[1:])
    assert ROWS.input_info().kind == "tabular" and ROWS.input_info().forms == ["rows", "npy", "inputs"]
    assert [c.name for c in ROWS.input_info().columns] == ["alcohol", "color", "organic"]


@pytest.mark.parametrize("row, field, words", [
    ({"alcohol": 13.0, "color": "blue", "organic": False}, "rows.0.color", "unknown at training time"),
    ({"alcohol": 13.0, "organic": False}, "rows.0.color", "missing"),
    ({"alcohol": "13", "color": "red", "organic": False}, "rows.0.alcohol", "a finite number"),
    ({"alcohol": 13.0, "color": "red", "organic": False, "vintage": 1999}, "rows.0.vintage", "unknown column"),
])
def test_bad_rows_get_422_naming_the_column(row, field, words):
    err = refused(ROWS, {"preference": [0.5, 0.5], "rows": [row]})
    assert (err.status, err.field) == (422, field) and words in err.message
    assert refused(ROWS, {"preference": [0.5, 0.5], "images": ["AAAA"]}).field == "images"


# ----------------------------------------------------------------------------- outputs

def test_each_task_kind_gets_its_typed_answer():
    torch.manual_seed(0)
    n = 2
    tasks = [Task("digit", "classification", 3, labels=("zero", "one", "two")), Task("smiling", "binary"),
             Task("age", "regression", target_mean=40.0, target_std=10.0),
             Task("parts", "segmentation", 4), Task("depth", "depth"), Task("normals", "normals", 3)]
    outs = [torch.randn(n, 3), torch.randn(n, 1), torch.randn(n, 1), torch.randn(n, 4, 5, 6), torch.randn(n, 1, 5, 6),
            torch.randn(n, 3, 5, 6)]
    options = OutputOptions(top_k=2, areas=True)
    cls, binary, reg, seg, depth, normals = (present(i + 1, t, o, options).model_dump(by_alias=True)
                                             for i, (t, o) in enumerate(zip(tasks, outs)))
    probs = outs[0].softmax(-1)
    assert cls["kind"] == "classification" and cls["classes"] == probs.argmax(-1).tolist()
    assert cls["class_names"] == [tasks[0].labels[c] for c in cls["classes"]]
    assert [t["class"] for t in cls["top_k"][0]] == probs[0].argsort(descending=True)[:2].tolist()
    assert_close(torch.tensor(cls["probabilities"]), probs)
    assert_close(torch.tensor(binary["probability"]), torch.sigmoid(outs[1][:, 0]))
    assert binary["label"] == (torch.sigmoid(outs[1][:, 0]) > 0.5).long().tolist()
    assert_close(torch.tensor(reg["values"]), outs[2] * 10.0 + 40.0)  # in years, not z-scores
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(seg["masks"][0]))))
    assert mask.shape == (5, 6) and np.array_equal(mask, outs[3][0].argmax(0).numpy())
    assert abs(sum(seg["areas"][0].values()) - 1.0) < 1e-9
    d = np.load(io.BytesIO(base64.b64decode(depth["depth"][1])))
    assert d.dtype == np.float32 and d.shape == (5, 6)
    assert_close(torch.from_numpy(d), outs[4][1, 0])
    v = np.load(io.BytesIO(base64.b64decode(normals["normals"][0])))
    assert v.shape == (3, 5, 6) and np.allclose(np.linalg.norm(v, axis=0), 1.0, rtol=1e-5)
    assert Image.open(io.BytesIO(mask_png(np.zeros((2, 2), np.int64), 300))).mode.startswith("I")  # > 256 classes


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """examples/wine.py trained a few epochs: a table (served by column) and three task kinds."""
    cfg = load_config(REPO / "examples" / "wine.yaml", ["train.epochs=3", "ray.num_workers=1"])
    torch.manual_seed(0)
    data = load_dataset(cfg.data)
    method, model, _ = build_model(cfg.model, cfg.method, data.tasks, tuple(data.train.x.shape[1:]))
    optimizer = build_optimizer(model, "adam", cfg.train.lr)
    for epoch in range(cfg.train.epochs):
        train_epoch(model, method, optimizer, data.train, epoch, cfg.train.epochs, cfg.train.batch_size, cfg.seed,
                    tasks=data.tasks)
    front = evaluate_front(model, data.val, simplex_grid(3, 10), tasks=data.tasks)
    path = save_checkpoint(tmp_path_factory.mktemp("wine") / "checkpoint", model, cfg, {"epoch": 2, "metrics": {}},
                           front=front, dataset=DatasetSpec.of(data))
    return path, model.eval(), data


def test_a_table_row_gets_task_typed_answers(wine):
    path, model, data = wine
    engine = Engine(load_served_model(str(path)))
    info = engine.info()
    assert info.input.kind == "tabular" and [c.name for c in info.input.columns] == FEATURES
    assert [t.kind for t in info.tasks] == ["classification", "binary", "regression"]
    assert {m.name: m.higher_is_better for m in info.tasks[2].metrics} == {"loss": False, "mae": False}
    pref = [0.2, 0.3, 0.5]
    encoder = InputSpec.from_dict(data.train.input_spec()).encoder
    raw = {f: [float(c.mean + c.std * v) for v in data.test.x[:4, j]] for j, (f, c) in
           enumerate(zip(FEATURES, encoder.columns))}  # the test rows back in their original units
    rows = [{f: raw[f][i] for f in FEATURES} for i in range(4)]
    answer = engine.predict(PredictRequest(preference=pref, rows=rows))
    with torch.no_grad():
        want = model.predict(data.test.inputs(index=slice(0, 4)), torch.tensor(pref).expand(4, -1))
    cultivar, rich, alcohol = answer.predictions
    assert cultivar.class_names[0] in ("class_0", "class_1", "class_2")
    assert_close(torch.tensor(cultivar.probabilities), want[0].softmax(-1), rtol=1e-4)
    assert_close(torch.tensor(rich.probability), torch.sigmoid(want[1][:, 0]), rtol=1e-4)
    alc = data.tasks[2]
    assert_close(torch.tensor(alcohol.values), want[2] * alc.target_std + alc.target_mean, rtol=1e-4)
    assert 10 < float(np.mean(alcohol.values)) < 16  # % vol, the original units
    with pytest.raises(RequestError) as err:
        engine.validate(PredictRequest(preference=pref, rows=[{**rows[0], "hue": "dark"}]))
    assert err.value.field == "rows.0.hue"


def test_select_takes_each_tasks_own_metric_and_direction(wine):
    front = load_served_model(str(wine[0])).front
    best = select_preference(front, SelectRequest.model_validate({"objective": {"task": "alcohol"}}))
    maes = front.column("mae_3").to_numpy()
    assert best.expected["mae_3"] <= maes.min() + 1e-9 and "minimizes" in best.message  # mae: lower is better
    feasible = select_preference(front, SelectRequest.model_validate(
        {"constraints": [{"task": "alcohol", "metric": "mae", "max": float(np.median(maes))}],
         "objective": {"task": 1}}))
    assert feasible.feasible and feasible.expected["mae_3"] <= float(np.median(maes)) + 1e-9
    with pytest.raises(RequestError) as err:  # the tasks' front metrics differ: no mean over tasks
        select_preference(front, SelectRequest())
    assert err.value.field == "objective.task"
    for request, field in (({"constraints": [{"task": "alcohol", "metric": "acc", "min": 0.5}]}, "constraints.0.metric"),
                           ({"objective": {"task": "colour"}}, "objective.task")):
        with pytest.raises(RequestError) as err:
            select_preference(front, SelectRequest.model_validate(request))
        assert err.value.field == field


# ----------------------------------------------------------------------------- fuzz

def corruptions(rng: random.Random) -> list[tuple[str, bytes, str | None]]:
    """Malformed requests of every new input form (name, body, content type), drawn from ``rng``."""
    png = encode_png(digits(1, rng.randrange(1000))[0])
    cut = png[: rng.randrange(8, len(png) - 1)]
    flipped = bytearray(png)
    for _ in range(rng.randrange(1, 8)):
        flipped[rng.randrange(8, len(flipped))] ^= 1 << rng.randrange(8)
    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    rgba = io.BytesIO()
    Image.new("RGBA", (28, 28), (1, 2, 3, 4)).save(rgba, "PNG")
    pref = [0.5, 0.5]

    def js(**body) -> bytes:
        return json.dumps({"preference": pref, **body}).encode()
    cases = [
        ("truncated png", js(images=[b64(cut)]), None),
        ("bit-flipped png", js(images=[b64(bytes(flipped))]), None),
        ("noise", js(images=[b64(noise)]), None),
        ("corrupt base64", js(images=[b64(png)[: rng.randrange(1, 40)] + "*"]), None),
        ("wrong shape npy", js(npy=npy(np.zeros((1, rng.randrange(1, 4), 28, 28), np.float32) + 0.0)), None),
        ("npy of strings", js(npy=npy(np.array(["a", "b"]))), None),
        ("noise npy", js(npy=b64(noise)), None),
        ("mixed forms", js(images=[b64(png)], npy=npy(np.zeros((1, 1, 28, 28), np.float32))), None),
        ("image number", js(images=[rng.randrange(100)]), None),
        ("rows on an image model", js(rows=[{"x": 1}]), None),
        ("100 megapixel header", js(images=[b64(png_header_only(10_000, 10_000))]), None),
        ("zero-byte upload", *multipart([("preference", None, b"[0.5, 0.5]"), ("images", "a.png", b"")])),
        ("noise upload", *multipart([("preference", None, b"[0.5, 0.5]"), ("images", "a.png", noise + b"x")])),
        ("mixed upload", *multipart([("preference", None, b"[0.5, 0.5]"), ("images", "a.png", png),
                                     ("npy", "x.npy", noise)])),
        ("truncated multipart", multipart([("preference", None, b"[0.5, 0.5]"), ("images", "a.png", png)])[0][
            : rng.randrange(1, 200)], "multipart/form-data; boundary=b0undary"),
    ]
    return cases


def test_fuzzed_inputs_get_4xx_naming_the_field():
    """Bounded: 30 draws of each corruption; an RGBA or RGB image for the gray model is converted, not refused."""
    rng = random.Random(17)
    seen = set()
    for _ in range(30):
        for name, body, ctype in corruptions(rng):
            try:
                DIGITS.parse_predict(body, ctype)
            except RequestError as err:
                assert 400 <= err.status < 500 and err.field and err.message, name
                seen.add(name)
            # a flipped bit in pixel data can leave a valid PNG (its CRC aside): then it is served as an image
    assert seen >= {"truncated png", "noise", "corrupt base64", "mixed forms", "zero-byte upload",
                    "100 megapixel header", "mixed upload", "truncated multipart", "wrong shape npy"}


def test_results_answer_through_the_frontend():
    item = parse(DIGITS, {"preference": [0.5, 0.5], "images": [b64(encode_png(digits(1)[0]))],
                          "output": {"top_k": 1}})
    logits = [torch.randn(1, 10), torch.randn(1, 10)]
    answer = DIGITS.response(item, ItemResult(logits, "merged", 1, 1))
    assert [p.kind for p in answer.predictions] == ["classification"] * 2
    assert answer.predictions[0].top_k[0][0].class_id == int(logits[0].argmax())
    assert DIGITS.input_info().forms == ["images", "npy", "inputs"] and DIGITS.input_info().channels == 1
    assert DIGITS_INPUT["kind"] == "image"

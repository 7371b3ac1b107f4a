"""The embed stage's tensor path, the GPU workers' path (JPEGs decoded in batches on the model's
device, EXIF orientation, preprocessing and thumbnails there), run on the CPU with
``IMAGESEARCH_TENSOR_DECODE=on`` through ``pipeline.embed_batch`` with the real embedded store, blob
folder and models, against the Pillow path on the same bytes. On CUDA the same functions run with
``device="cuda"`` (nvJPEG)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from skimage import data as samples

from imagesearch import imaging, pipeline
from imagesearch.blobs import LocalBlobStore, original_key
from imagesearch.config import Settings, WorkerSettings
from imagesearch.models import get_captioner, get_clip
from imagesearch.models.clip import ClipEncoder, ClipSpec, load_clip
from imagesearch.models.open_clip_backend import tensor_transform
from imagesearch.records import ImageRecord, content_hash
from imagesearch.stores.embedded import EmbeddedStore
from imagesearch.vocab import VectorField
from tests.support.hostile import corpus
from tests.support.images import jpeg
from tests.support.tiny_transformers import SPECIALS, save_tiny_clip, save_tiny_siglip

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; the GPU machines run 0.26.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

MIN_COSINE = 0.999
ORIGINAL, EXIF_IFD = 0x9003, 0x8769


def _jpeg(pixels: np.ndarray, *, orientation: int | None = None, scale: int = 1, date: str | None = None,
          **save: object) -> bytes:
    image = Image.fromarray(pixels)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if date:
        exif.get_ifd(EXIF_IFD)[ORIGINAL] = date
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, exif=exif.tobytes(), **save)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """scikit-image's sample photos, and the cases the tensor path handles its own way."""
    astronaut = samples.astronaut()
    return {
        "astronaut": _jpeg(astronaut, date="2021:07:04 12:30:00"),
        "coffee": _jpeg(samples.coffee()),
        "chelsea": _jpeg(samples.chelsea()),
        "rocket": _jpeg(samples.rocket()),
        "hubble": _jpeg(samples.hubble_deep_field()),
        "retina": _jpeg(samples.retina()),  # 1411 px: Pillow decodes it at 1/2 scale, the tensor path in full
        "camera": _jpeg(samples.camera()),  # a greyscale JPEG
        "chelsea-4x-progressive": _jpeg(samples.chelsea(), scale=4, progressive=True),
        # Stored rotated, with the EXIF orientation that shows them upright: vectors must match the upright one.
        "astronaut-exif6": _jpeg(np.ascontiguousarray(np.rot90(astronaut, 1)), orientation=6),
        "astronaut-exif3": _jpeg(np.ascontiguousarray(astronaut[::-1, ::-1]), orientation=3),
        "astronaut-exif5": _jpeg(np.ascontiguousarray(astronaut.transpose(1, 0, 2)), orientation=5),
        # The same picture mirrored, no EXIF: a control that the model tells orientation apart.
        "astronaut-mirrored": _jpeg(np.ascontiguousarray(astronaut[:, ::-1])),
    }


class DecodeSpy:
    """The real decoders, counting what each path decoded (so a silent fallback cannot pass as the tensor path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on_device = 0
        self.with_pillow = 0
        decode_jpegs, decode_with_size = imaging.decode_jpegs, imaging.decode_with_size

        def counted_jpegs(datas, device):
            self.on_device += len(datas)
            return decode_jpegs(datas, device)

        def counted_pillow(data, **kw):
            self.with_pillow += 1
            return decode_with_size(data, **kw)

        monkeypatch.setattr(imaging, "decode_jpegs", counted_jpegs)
        monkeypatch.setattr(imaging, "decode_with_size", counted_pillow)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> DecodeSpy:
    return DecodeSpy(monkeypatch)


def _embed(files: dict[str, bytes], folder: Path, clip: ClipEncoder, mode: str, **workers: object) -> dict[str, dict]:
    """Every file through embed_batch (written past the API's header check, as a bucket delivers
    objects), in model batches of 3 so the fetch/decode/model/write overlap runs over several batches.
    Returns, per file, the record, its image vector and its thumbnail bytes."""
    settings = Settings(data_dir=folder, workers=WorkerSettings(_env_file=None, tensor_decode=mode,
                                                                embed_batch_size=3, **workers))
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    ids = {}
    for n, (name, data) in enumerate(files.items()):
        image_id = f"i{n:03d}"
        blobs.put(original_key(image_id), data)
        store.put(ImageRecord(id=image_id, blob_key=original_key(image_id), content_hash=content_hash(data),
                              source=name))
        ids[name] = image_id
    outcome = pipeline.embed_batch(list(ids.values()), settings=settings, store=store, blobs=blobs, clip=clip)
    assert not outcome.retry and not outcome.skipped
    records = store.get_many(ids.values())
    vectors = store.vectors(ids.values(), VectorField.IMAGE, clip.identity)
    return {name: {"record": records[i], "vector": vectors.get(i),
                   "thumbnail": blobs.get(records[i].thumb_key) if records[i].thumb_key else None}
            for name, i in ids.items()}


def _cosines(a: dict[str, dict], b: dict[str, dict]) -> dict[str, float]:
    """Per file embedded on both paths: the cosine of its two vectors."""
    return {name: round(float(a[name]["vector"] @ b[name]["vector"]), 6) for name in a
            if a[name]["vector"] is not None and b[name]["vector"] is not None}


def test_tensor_path_vectors_match_the_pillow_path(tmp_path, photos, spy):
    clip = get_clip(Settings())
    pillow = _embed(photos, tmp_path / "pillow", clip, "off")
    assert (spy.on_device, spy.with_pillow) == (0, len(photos))
    spy.with_pillow = 0
    tensor = _embed(photos, tmp_path / "tensor", clip, "on")
    assert (spy.on_device, spy.with_pillow) == (len(photos), 0)  # every photo decoded as a tensor, none fell back

    cosines = _cosines(pillow, tensor)
    assert min(cosines.values()) >= MIN_COSINE, cosines
    upright = pillow["astronaut"]["vector"]
    for rotated in ("astronaut-exif6", "astronaut-exif3", "astronaut-exif5"):
        assert float(upright @ tensor[rotated]["vector"]) >= MIN_COSINE, rotated  # orientation applied
    # The control: this model's vectors do move below the bound when a picture is mirrored.
    assert float(upright @ pillow["astronaut-mirrored"]["vector"]) < MIN_COSINE

    for name in photos:
        p, t = pillow[name]["record"], tensor[name]["record"]
        assert t.status == "indexed"
        # Full size as shown (EXIF orientation applied), and the EXIF date: the same on both paths.
        assert (t.width, t.height, t.taken_at) == (p.width, p.height, p.taken_at), name
        thumb = Image.open(io.BytesIO(tensor[name]["thumbnail"]))
        thumb.load()  # a complete, valid JPEG
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
        assert thumb.size == imaging.thumbnail_size(t.width, t.height, 256)
        assert thumb.size == Image.open(io.BytesIO(pillow[name]["thumbnail"])).size
    assert (tensor["astronaut-exif6"]["record"].width, tensor["astronaut-exif6"]["record"].height) == (512, 512)
    assert tensor["retina"]["record"].width == 1411  # the source's size, not the reduced decode's
    assert tensor["astronaut"]["record"].taken_at == 1625401800.0


def test_thumbnails_show_the_same_picture(tmp_path, photos):
    clip = get_clip(Settings())
    chosen = {name: photos[name] for name in ("coffee", "astronaut-exif6", "camera")}
    pillow = _embed(chosen, tmp_path / "pillow", clip, "off")
    tensor = _embed(chosen, tmp_path / "tensor", clip, "on")
    for name in chosen:
        a = np.asarray(Image.open(io.BytesIO(pillow[name]["thumbnail"])), dtype=np.float32)
        b = np.asarray(Image.open(io.BytesIO(tensor[name]["thumbnail"])), dtype=np.float32)
        assert np.abs(a - b).mean() < 4.0, name  # JPEG and resampling differences only (a rotation is ~60)


WORDS = [*SPECIALS, "a", "photo", "of", "dog"]


@pytest.fixture(scope="module")
def transformers_clips(tmp_path_factory) -> dict[str, Path]:
    """A CLIPModel (shorter side to 48, centre crop, bicubic) and a SigLIP (squashed to 48x48,
    bilinear, mean/std 0.5) saved with save_pretrained: both preprocessing families."""
    torch.manual_seed(0)
    clip_dir = save_tiny_clip(tmp_path_factory.mktemp("hf-clip"), WORDS, 48)
    siglip_dir = save_tiny_siglip(tmp_path_factory.mktemp("hf-siglip"), WORDS, 48, resample=2)
    return {"clip": clip_dir, "siglip": siglip_dir}


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_transformers_models_take_the_tensor_path_with_their_own_processor(tmp_path, photos, spy,
                                                                           transformers_clips, family):
    clip = load_clip(ClipSpec("x", None, transformers_clips[family], "cpu"))
    assert clip.preprocesses_tensors
    chosen = {name: photos[name] for name in ("astronaut", "coffee", "rocket", "camera", "astronaut-exif6")}
    pillow = _embed(chosen, tmp_path / "pillow", clip, "off")
    tensor = _embed(chosen, tmp_path / "tensor", clip, "on")
    assert spy.on_device == len(chosen)
    cosines = _cosines(pillow, tensor)
    assert min(cosines.values()) >= MIN_COSINE, cosines


@pytest.mark.parametrize("resize_mode, interpolation", [
    ("shortest", "bicubic"), ("shortest", "bilinear"), ("squash", "bicubic"),
])
def test_open_clip_transform_on_tensors_matches_it_on_images(resize_mode, interpolation):
    """Each step of open_clip's eval Compose, run on a decoded tensor, against the Compose on the
    Pillow image of the same pixels: rounding to uint8 between steps is the only difference."""
    transform = open_clip.image_transform(224, is_train=False, resize_mode=resize_mode, interpolation=interpolation)
    on_tensors = tensor_transform(transform)
    assert on_tensors is not None
    for pixels in (samples.astronaut(), samples.coffee(), samples.rocket()):
        expected = transform(Image.fromarray(pixels))
        got = on_tensors([torch.from_numpy(pixels).permute(2, 0, 1).contiguous()])[0]
        assert got.shape == expected.shape
        assert float((got - expected).abs().mean()) < 0.01


def test_a_transform_without_a_tensor_counterpart_leaves_the_model_to_pillow():
    assert tensor_transform(open_clip.image_transform(224, is_train=False, resize_mode="longest")) is None


def test_auto_is_the_pillow_path_on_a_cpu(tmp_path, photos, spy):
    clip = get_clip(Settings())
    assert clip.device.type == "cpu"
    _embed({"coffee": photos["coffee"]}, tmp_path, clip, "auto")
    assert (spy.on_device, spy.with_pillow) == (0, 1)


def _tensor_path_hostile() -> dict[str, tuple[bytes, str]]:
    """Files that reach the device decoder, with what the Pillow path makes of each."""
    noise = Image.fromarray(np.random.default_rng(7).integers(0, 256, size=(300, 400, 3), dtype=np.uint8))
    out = io.BytesIO()
    noise.save(out, format="JPEG")
    whole = out.getvalue()
    corrupt = bytearray(whole)
    corrupt[len(whole) // 2:len(whole) // 2 + 64] = b"\xff\x3c" * 32  # an unknown marker in the scan: unreadable
    scrambled = bytearray(whole)
    for i in range(len(whole) // 2, len(whole) - 16, 97):
        scrambled[i] ^= 0x5A  # damaged entropy data: libjpeg warns and decodes, or gives up
    return {
        "truncated-with-eoi.jpg": (whole[: len(whole) // 2] + b"\xff\xd9", "indexed"),  # Pillow fills the rest grey
        "unknown-marker.jpg": (bytes(corrupt), "failed"),
        "scrambled.jpg": (bytes(scrambled), "as the Pillow path"),
        "trailing-zeros.jpg": (whole + b"\0" * 16, "indexed"),  # no end marker last: the Pillow path
        "progressive.jpg": (_jpeg(np.asarray(noise), progressive=True), "indexed"),
        "exif7.jpg": (_jpeg(np.asarray(noise), orientation=7), "indexed"),
    }


def test_hostile_files_end_as_on_the_pillow_path(tmp_path, spy):
    """tests/support/hostile.py's corpus plus the cases particular to the device decoder, mixed into
    good images: the same status, error, size and date for every file on both paths."""
    files = {f"good-{i}.jpg": (jpeg((i * 40, 120, 30), size=(320, 240)), "indexed") for i in range(3)}
    files |= corpus() | _tensor_path_hostile()
    clip = get_clip(Settings())
    datas = {name: data for name, (data, _) in files.items()}
    pillow = _embed(datas, tmp_path / "pillow", clip, "off")
    tensor = _embed(datas, tmp_path / "tensor", clip, "on")
    assert spy.on_device >= 3 + 6  # the good JPEGs and most of the device decoder's cases went there

    def ending(result: dict) -> tuple:
        r = result["record"]
        thumb = Image.open(io.BytesIO(result["thumbnail"])).size if result["thumbnail"] else None
        return r.status, r.error, r.width, r.height, r.taken_at, thumb

    assert {n: ending(r) for n, r in tensor.items()} == {n: ending(r) for n, r in pillow.items()}
    assert {n: tensor[n]["record"].status for n, (_, expected) in files.items() if expected != "as the Pillow path"} \
        == {n: expected for n, (_, expected) in files.items() if expected != "as the Pillow path"}
    assert "pixels" in tensor["bomb.png"]["record"].error
    assert (tensor["rotated-exif.jpg"]["record"].width, tensor["rotated-exif.jpg"]["record"].height) == (100, 200)
    cosines = _cosines(pillow, tensor)
    assert len(cosines) == sum(r["record"].status == "indexed" for r in pillow.values())
    assert min(cosines.values()) >= MIN_COSINE, cosines


def test_captions_in_gpu_sized_calls_are_the_one_call_captions(tmp_path, photos):
    """On CUDA a caption task is captioned in calls of CAPTION_GPU_BATCH_SIZE, overlapped with loading
    the next thumbnails; here a captioner that reports a CUDA device drives that path on the CPU."""
    settings = Settings(data_dir=tmp_path, workers=WorkerSettings(_env_file=None, caption_gpu_batch_size=2))
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    clip, real = get_clip(settings), get_captioner(settings)
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    ids = []
    for name in names:
        image_id = f"c-{name}"
        blobs.put(original_key(image_id), photos[name])
        store.put(ImageRecord(id=image_id, blob_key=original_key(image_id), content_hash=content_hash(photos[name])))
        ids.append(image_id)
    assert pipeline.embed_batch(ids, settings=settings, store=store, blobs=blobs, clip=clip).done == ids

    class ReportsCuda:  # the real captioner, as a GPU worker's reports its device; call sizes written down
        device = torch.device("cuda")
        identity = real.identity

        def __init__(self) -> None:
            self.calls: list[int] = []

        def caption(self, images):
            self.calls.append(len(images))
            return real.caption(images)

    gpu_sized = ReportsCuda()
    outcome = pipeline.caption_batch(ids, settings=settings, store=store, blobs=blobs, captioner=gpu_sized, clip=clip)
    assert sorted(outcome.done) == sorted(ids) and not outcome.failed and not outcome.retry
    assert sorted(gpu_sized.calls) == [1, 2, 2]
    records = store.get_many(ids)
    thumbs = [imaging.decode(blobs.get(records[i].thumb_key), min_side=256, max_pixels=10**7) for i in ids]
    assert [records[i].caption for i in ids] == real.caption(thumbs)  # one call over all: the same captions
    vectors = store.vectors(ids, VectorField.CAPTION, clip.identity)
    expected = clip.encode_texts([records[i].caption for i in ids])
    assert np.allclose(np.stack([vectors[i] for i in ids]), expected, atol=1e-5)

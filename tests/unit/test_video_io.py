import numpy as np
import pytest

from mindvideo.errors import DataError
from mindvideo.eval.video_io import read_clip, read_clip_set, write_clip_set


def clips(n=3, f=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, f, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["npy", "png"])
def test_lossless_formats_roundtrip(tmp_path, fmt):
    data = clips()
    write_clip_set(tmp_path, ["a", "b", "c"], data, fmt=fmt)
    names, back = read_clip_set(tmp_path)
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(np.stack(back), data)


def test_gif_roundtrip_keeps_frames_and_shape(tmp_path):
    # Distinct flat frames survive the GIF palette exactly.
    data = np.zeros((1, 4, 8, 8, 3), np.uint8)
    for k, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        data[0, k] = c
    write_clip_set(tmp_path, ["x"], data, fmt="gif")
    np.testing.assert_array_equal(read_clip(tmp_path / "x.gif"), data[0])


def test_mp4_is_read(tmp_path):
    import av

    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=3)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for k in range(5):
            img = np.full((32, 32, 3), 40 * k, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    clip = read_clip(path)
    assert clip.shape == (5, 32, 32, 3)
    assert abs(int(clip[4].mean()) - 160) < 8


def test_bundle_with_names(tmp_path):
    data = clips(n=2)
    np.save(tmp_path / "clips.npy", data)
    names, back = read_clip_set(tmp_path)
    assert names == ["0000", "0001"]
    (tmp_path / "names.txt").write_text("test1_000\ntest1_001\n")
    assert read_clip_set(tmp_path)[0] == ["test1_000", "test1_001"]
    (tmp_path / "names.txt").write_text("only_one\n")
    with pytest.raises(DataError, match="names.txt: 1 names for 2 clips"):
        read_clip_set(tmp_path)


def test_float_frames_are_scaled(tmp_path):
    np.save(tmp_path / "a.npy", np.full((2, 4, 4, 3), 0.5, np.float32))
    assert read_clip(tmp_path / "a.npy").max() == 128


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "broken.gif").write_bytes(b"GIF89a nonsense")
    with pytest.raises(DataError, match="broken.gif: cannot read GIF"):
        read_clip(tmp_path / "broken.gif")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(DataError, match=r"flat.npy: a clip must have shape \(frames, H, W, 3\)"):
        read_clip(tmp_path / "flat.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no frame images"):
        read_clip(tmp_path / "empty")
    with pytest.raises(DataError, match="folder not found"):
        read_clip_set(tmp_path / "missing")
    np.save(tmp_path / "dup.npy", np.zeros((1, 2, 2, 3), np.uint8))
    (tmp_path / "dup").mkdir()
    with pytest.raises(DataError, match="sample 'dup' appears twice"):
        read_clip_set(tmp_path)

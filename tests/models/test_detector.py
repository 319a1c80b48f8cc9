import cv2
import numpy as np
import pytest

from maskwatch.models.detector import SSDDetector, YuNetDetector, _tile_starts, create_detector
from maskwatch.ops.boxes import iou_matrix
from maskwatch.ops.image import read_image


@pytest.fixture(scope="module")
def yunet():
    return YuNetDetector()


@pytest.fixture(scope="module")
def ssd():
    return SSDDetector()


def test_blank_and_tiny_images_give_no_faces(yunet, ssd):
    for det in (yunet, ssd):
        assert len(det.detect(np.zeros((240, 320, 3), np.uint8))) == 0
        assert len(det.detect(np.zeros((1, 1, 3), np.uint8))) == 0


def test_unknown_detector_name():
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("haar")


def test_group_photo_all_six_faces(datasets, yunet):
    img = read_image(datasets / "group-photos" / "t1.jpg")
    faces = yunet.detect(img)
    assert len(faces) == 6
    assert faces.has_landmarks
    h, w = img.shape[:2]
    assert (faces.boxes[:, 0] >= 0).all() and (faces.boxes[:, 2] <= w).all()
    # landmarks lie inside their boxes
    lm = faces.landmarks
    assert ((lm[..., 0] >= faces.boxes[:, None, 0] - 2)
            & (lm[..., 0] <= faces.boxes[:, None, 2] + 2)).all()


def test_large_face_found_after_downscaling(datasets, yunet):
    # A 250-px LFW face blown up to 1500 px: faces far over YuNet's 300-px range.
    img = read_image(next((datasets / "lfw-identities" / "images").rglob("*.jpg")))
    big = cv2.resize(img, (1500, 1500))
    faces = yunet.detect(big)
    assert len(faces) >= 1
    assert faces.widths.max() > 400


@pytest.mark.parametrize(("length", "tile", "overlap", "starts"), [
    (800, 1024, 288, [0]),
    (1024, 1024, 288, [0]),
    (1025, 1024, 288, [0, 1]),
    (2048, 1024, 288, [0, 736, 1024]),
    (1418, 1024, 288, [0, 394]),
])
def test_tiles_cover_the_input_with_the_overlap(length, tile, overlap, starts):
    got = _tile_starts(length, tile, overlap)
    assert got == starts
    ends = [s + min(tile, length) for s in got]
    assert got[0] == 0 and ends[-1] == length
    assert all(e - s2 >= overlap for e, s2 in zip(ends, got[1:], strict=False))


def test_tiled_photo_pass_finds_the_whole_passs_faces(datasets):
    """A photo's enlarged pass (2048x1418 for this 1280 px photo) is searched in 1024 px
    tiles to bound YuNet's memory: the same six faces, boxes within a few pixels."""
    from maskwatch.pipeline import PipelineConfig

    img = read_image(datasets / "group-photos" / "t1.jpg")
    tiled = PipelineConfig.accurate().make_detector()
    whole = PipelineConfig.accurate().make_detector()
    whole.TILE_SIDE = 10_000  # no tiling
    a, b = tiled.detect(img), whole.detect(img)
    assert len(a) == len(b) == 6
    iou = iou_matrix(a.boxes, b.boxes)
    assert (iou.max(axis=1) > 0.85).all(), iou.max(axis=1)
    # and the landmarks were moved with their boxes (not only the corners)
    order = iou.argmax(axis=1)
    assert np.abs(a.landmarks - b.landmarks[order]).max() < 8


def test_photo_mode_finds_what_live_mode_finds_on_video_frames(datasets):
    """Photo mode enlarges images for tiny faces; enlarging alone lost faces of 40-60 px
    and large close-ups (497 faces on the clip against 748 for live mode), so it also
    searches the image as it is and shrunk: now it finds at least as many."""
    accurate, live = YuNetDetector(max_side=2048, upscale=2.0), YuNetDetector()
    cap = cv2.VideoCapture(str(datasets / "videos" / "short_hamilton_clip.mp4"))
    n_acc = n_live = 0
    k = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if k % 5 == 0:
            a, b = accurate.detect(frame), live.detect(frame)
            n_acc += len(a)
            n_live += len(b)
            if len(b):  # every face live mode finds of 40 px or more, photo mode finds too
                big = b[b.widths >= 40]
                if len(big):
                    assert len(a) and (iou_matrix(big.boxes, a.boxes).max(axis=1) > 0.5).all(), k
        k += 1
    cap.release()
    assert n_live > 100 and n_acc >= n_live, (n_acc, n_live)


def test_ssd_finds_the_close_up(datasets, ssd):
    img = read_image(next((datasets / "lfw-identities" / "images").rglob("*.jpg")))
    faces = ssd.detect(img)
    assert len(faces) >= 1 and not faces.has_landmarks


def test_detect_around_finds_the_same_faces_as_the_whole_frame(datasets, yunet):
    image = read_image(datasets / "group-photos" / "t1.jpg")
    full = yunet.detect(image)
    assert len(full) == 6
    again = yunet.detect_around(image, full.boxes)
    assert len(again) == 6
    assert again.has_landmarks
    iou = iou_matrix(full.boxes, again.boxes)
    assert (iou.max(axis=1) > 0.7).all(), iou.max(axis=1)
    # Looking around one face finds that face only (its neighbours are cut by the region's edge).
    one = yunet.detect_around(image, full.boxes[:1], scale=1.5)
    assert len(one) == 1 and iou_matrix(full.boxes[:1], one.boxes)[0, 0] > 0.7
    # Nothing is expected where there is no face.
    assert len(yunet.detect_around(image, [[0, 0, 20, 20]])) == 0


# Faces of at least 60 px in the identity examples (accurate mode); a background face of
# 18 px in obama_and_biden.jpg is found too but not required.
IDENTITY_FACES = {
    "alex-lacamoire.png": 1, "biden.jpg": 1, "lin-manuel-miranda.png": 1, "obama.jpg": 1,
    "two_people.jpg": 2,
    "knn_examples/test/alex_lacamoire1.jpg": 1, "knn_examples/test/johnsnow_test1.jpg": 1,
    "knn_examples/test/kit_with_rose.jpg": 2, "knn_examples/test/obama1.jpg": 1,
    "knn_examples/test/obama_and_biden.jpg": 3, "knn_examples/train/alex_lacamoire/img1.jpg": 1,
    "knn_examples/train/biden/biden2.jpg": 1, "knn_examples/train/kit_harington/john1.jpeg": 1,
    "knn_examples/train/kit_harington/john2.jpeg": 1, "knn_examples/train/obama/obama2.jpg": 1,
    "knn_examples/train/rose_leslie/img1.jpg": 1, "knn_examples/train/rose_leslie/img2.jpg": 1,
}


@pytest.mark.parametrize("name, expected", sorted(IDENTITY_FACES.items()))
def test_identity_examples_every_person_found(datasets, name, expected):
    faces = YuNetDetector(max_side=2048).detect(
        read_image(datasets / "identity-examples" / "examples" / name))
    assert (faces.widths >= 60).sum() == expected, faces.widths


def test_identity_examples_people_found_under_synthetic_masks(datasets):
    """Every person of the identity examples, masked three times with random mask styles:
    at least 90% of the masked faces are found again (measured: 58 of 63, 92%; the misses
    are mostly faces larger than YuNet's ~300 px range at full resolution)."""
    from maskwatch.ops.synthmask import render_mask

    detector = YuNetDetector(max_side=2048)
    found = total = 0
    for name in sorted(IDENTITY_FACES):
        image = read_image(datasets / "identity-examples" / "examples" / name)
        faces = detector.detect(image)
        big = faces[faces.widths >= 60]
        for seed in range(3):
            rng = np.random.default_rng(seed)
            masked = image
            for i in range(len(big)):
                masked = render_mask(masked, big.landmarks[i], big.boxes[i], rng=rng)
            again = detector.detect(masked)
            total += len(big)
            if len(again):
                found += int((iou_matrix(big.boxes, again.boxes).max(axis=1) > 0.5).sum())
    assert total == 3 * sum(IDENTITY_FACES.values())
    assert found >= 0.9 * total, (found, total)


def test_second_look_is_on_in_photo_mode_only():
    assert YuNetDetector(max_side=2048, upscale=2.0).second_look
    assert not YuNetDetector().second_look
    assert YuNetDetector(second_look=True).second_look
    assert not YuNetDetector(upscale=2.0, second_look=False).second_look


def test_second_look_keeps_sure_finds_without_looking(yunet):
    """Finds scoring SECOND_LOOK_SURE or more are kept as they are: here on a blank
    image, where a look would find nothing."""
    from maskwatch.types import Faces

    faces = Faces(boxes=np.array([[40, 40, 80, 90], [100, 40, 140, 90]], np.float32),
                  scores=np.array([0.9, 0.7], np.float32))
    keep = yunet.confirm(np.zeros((240, 320, 3), np.uint8), faces)
    assert keep.tolist() == [True, False]


# Finds of photo mode on mask-scenes that are not faces and match no labelled face,
# which the second look drops: a teddy bear, the back of a head, a 19 px patch of an
# orange coat (12 such finds of 16 px and more on all 427 scenes, and none that
# matches a labelled face).
SECOND_LOOK_DROPS = {
    "maksssksksss6": [[525, 201, 600, 331]],
    "maksssksksss798": [[28, 125, 114, 219]],
    "maksssksksss474": [[200, 17, 219, 41]],
}


def test_second_look_drops_non_faces_and_keeps_labelled_faces(datasets):
    from maskwatch.evaluate.detection import match_boxes
    from maskwatch.train.data import parse_voc

    looked = YuNetDetector(max_side=2048, upscale=2.0)
    plain = YuNetDetector(max_side=2048, upscale=2.0, second_look=False)
    root = datasets / "mask-scenes"
    for stem, boxes in SECOND_LOOK_DROPS.items():
        image = read_image(root / "images" / f"{stem}.jpg")
        before, after = plain.detect(image), looked.detect(image)
        # the finds the second look keeps are finds of the search itself, unchanged
        assert len(after) < len(before)
        assert (iou_matrix(after.boxes, before.boxes).max(axis=1) > 0.999).all()
        non_faces = np.array(boxes, np.float32)
        assert (iou_matrix(non_faces, before.boxes).max(axis=1) > 0.9).all(), stem
        assert (iou_matrix(non_faces, after.boxes).max(axis=1) < 0.5).all(), stem
        labels = np.array([b for _, b in parse_voc(root / "labels" / f"{stem}.xml")], np.float32)
        found_before = match_boxes(labels, before.boxes, 0.4)[0]
        found_after = match_boxes(labels, after.boxes, 0.4)[0]
        assert found_before.sum() > 0 and (found_after >= found_before).all(), stem


def test_second_look_drops_the_hand_on_the_clip(datasets):
    """Frames 62 and 66 of the shared clip: photo mode finds the performer's hand
    (raised in front of the audience, right of the image) as a face; the second look
    drops it and keeps the audience's faces."""
    cap = cv2.VideoCapture(str(datasets / "videos" / "short_hamilton_clip.mp4"))
    frames = {}
    for k in range(67):
        ok, frame = cap.read()
        assert ok
        if k in (62, 66):
            frames[k] = frame
    cap.release()
    looked = YuNetDetector(max_side=2048, upscale=2.0)
    plain = YuNetDetector(max_side=2048, upscale=2.0, second_look=False)
    hand = np.array([[498, 136, 594, 270]], np.float32)
    for k, frame in frames.items():
        before, after = plain.detect(frame), looked.detect(frame)
        assert iou_matrix(hand, before.boxes).max() > 0.6, k
        assert len(after) == len(before) - 1, k
        assert len(after) >= 3 and iou_matrix(hand, after.boxes).max() < 0.3, k

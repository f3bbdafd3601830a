"""SimSiamModule on a DataLoader of your own: any Dataset that gives uint8 images, in your own Lightning Trainer.

    python examples/own_dataloader.py --epochs 1

Where lightning_trainer.py lets SimSiamDataModule hold the decoded images, here a
plain torch Dataset does (yours could read tiles from a database, or crops from a
slide): SimSiamModule takes (B, C, H, W) uint8 batches, or (images, labels)
pairs, and renders the two views of every image itself, on the training device.
Prints the online kNN top-1 on 500 held-out demo images.
"""

import argparse

import lightning as L
from torch.utils.data import DataLoader, TensorDataset

from simsiam.data import load_demo
from simsiam.lightning import OnlineKnn, SimSiamModule

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=25)
args = parser.parse_args()

L.seed_everything(0, verbose=False)
train, test = load_demo().split(0.1)
# Your data pipeline: here a TensorDataset of (uint8 image, label) pairs; the labels are not used for training.
loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=128, shuffle=True, drop_last=True, num_workers=0)

module = SimSiamModule(backbone="resnet10-tiny", image_size=32, proj_dim=512, pred_hidden_dim=128, batch_size=128, base_lr=0.3)
trainer = L.Trainer(
    max_epochs=args.epochs,
    accelerator="auto",
    devices=1,
    callbacks=[OnlineKnn(train, test, k=20)],  # the kNN monitor works with any module whose model has features()
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
)
trainer.fit(module, loader)  # the lr schedule is sized from the Trainer's steps: no count to give
print(f"kNN top-1 on the 500 held-out images: {float(trainer.callback_metrics['knn_top1']):.4f}")

"""SimSiam in your own Lightning Trainer: SimSiamModule, SimSiamDataModule and the OnlineKnn callback.

    python examples/lightning_trainer.py --epochs 1                # one process (the GPU when there is one)
    python examples/lightning_trainer.py --epochs 1 --devices 2    # DDP over 2 processes (CPU or GPUs)

The same three classes are what `simsiam train` runs on, so your Trainer gets the
same training: the views on the device, the decoded-once image cache, each DDP
process its own shard of every epoch. Trains on the bundled demo set and prints
the online kNN top-1 of the backbone on 500 held-out images.
"""

import argparse

import lightning as L
import torch

from simsiam.data import load_demo
from simsiam.lightning import OnlineKnn, SimSiamDataModule, SimSiamModule

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=25)
parser.add_argument("--devices", type=int, default=1, help="processes; more than 1 trains with DDP")
parser.add_argument("--save", metavar="FILE.ckpt", help="save the trained module: `simsiam export FILE.ckpt --format torchvision` takes it")
args = parser.parse_args()

L.seed_everything(0, verbose=False)
train, test = load_demo().split(0.1)  # 4,500 images to learn from, 500 labeled queries for the kNN

# Every option of `simsiam train` by its name: the network, the views, the loss, the optimizer.
# batch_size is the global batch (the lr is base_lr x batch / 256, as in the paper).
module = SimSiamModule(
    backbone="resnet10-tiny", image_size=32, proj_dim=512, pred_hidden_dim=128, batch_size=128, base_lr=0.3, epochs=args.epochs
)
# Your own DataLoader of uint8 (B, C, H, W) batches works too; this one keeps the decoded images on
# the GPU when they fit (else pinned memory, else the disk cache) and gives each process its shard.
data = SimSiamDataModule(images=train.images, batch_size=128)
knn = OnlineKnn(train, test, k=20)  # logs knn_top1 every epoch; a ModelCheckpoint may monitor it

gpu = torch.cuda.is_available()
trainer = L.Trainer(
    max_epochs=args.epochs,
    accelerator="gpu" if gpu else "cpu",
    devices=args.devices,
    strategy="ddp" if args.devices > 1 else "auto",
    sync_batchnorm=gpu and args.devices > 1,  # the paper's synchronized BN; torch's SyncBatchNorm needs GPUs
    precision="bf16-mixed" if gpu else "32-true",
    callbacks=[knn],
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
)
trainer.fit(module, data)
if trainer.is_global_zero:
    print(f"kNN top-1 on the 500 held-out images: {float(trainer.callback_metrics['knn_top1']):.4f}")
if args.save:
    trainer.save_checkpoint(args.save, weights_only=False)  # every process takes part; rank 0 writes

"""SimSiam in a plain PyTorch loop: no Lightning, no simsiam command, just the model, the views and the loss.

    python examples/pytorch_loop.py --epochs 1

Trains on the bundled demo set (5,000 CIFAR-10 images, 32x32) and prints the kNN
top-1 of the backbone on 500 held-out images at the end. Every line that is
SimSiam (Chen & He, 2020) is marked with the paper's symbols.
"""

import argparse

import torch

from simsiam import Augment, SimSiam, knn_accuracy, simsiam_loss
from simsiam.data import load_demo
from simsiam.evaluate import normalize_images

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=25)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--base-lr", type=float, default=0.3)
args = parser.parse_args()

torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
train, test = load_demo().split(0.1)  # 4,500 images to learn from, 500 labeled queries for kNN
images = train.images  # (4500, 3, 32, 32) uint8, decoded once

# f = backbone + projection MLP, h = prediction MLP; a CPU-sized ResNet-10 (the demo's network).
model = SimSiam("resnet10-tiny", proj_dim=512, proj_layers=2, pred_hidden_dim=128).to(device)
augment = Augment(size=32)  # SimCLR's views, random parameters per sample, on whole batches
lr = args.base_lr * args.batch_size / 256  # paper, section 4: lr = base_lr x batch / 256
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
steps = args.epochs * (len(images) // args.batch_size)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)  # cosine decay, per step

for epoch in range(args.epochs):
    model.train()
    for batch in images[torch.randperm(len(images))].split(args.batch_size)[:-1]:  # full batches only: BN wants them
        x = batch.to(device)
        x1, x2 = augment(x), augment(x)  # two views of every image
        p1, p2, z1, z2 = model(x1, x2)  # z = f(x), p = h(z); z1, z2 come back detached: stopgrad(z)
        loss = simsiam_loss(p1, p2, z1, z2)  # L = D(p1, z2)/2 + D(p2, z1)/2, minimum -1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}")

# kNN on the backbone's features (eval mode, no autograd): the l2-normalised features of the 500 queries vote.
model.eval()
with torch.no_grad():
    bank, queries = (torch.cat([model.features(normalize_images(b.to(device))) for b in s.images.split(1000)]) for s in (train, test))
top1 = knn_accuracy(bank, train.labels, queries, test.labels, k=20)
print(f"kNN top-1 on the 500 held-out images: {top1:.4f}")

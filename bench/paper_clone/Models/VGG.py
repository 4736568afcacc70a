"""VGG-13 (CIFAR classifier 4096-4096) and the CIFAR-10 network with a voting layer, in the
paper's style (ReLU and MaxPool, swapped by the surgery in utils.py)."""

from torch import nn

VGG13 = [[64, 64, "M"], [128, 128, "M"], [256, 256, "M"], [512, 512, "M"], [512, 512, "M"]]


class VGG(nn.Module):
    def __init__(self, cfg, num_classes=10):
        super().__init__()
        self.init_channels = 3
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = (self._make_layers(c) for c in cfg)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def _make_layers(self, cfg):
        layers = []
        for x in cfg:
            if x == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(self.init_channels, x, 3, padding=1), nn.BatchNorm2d(x), nn.ReLU()]
                self.init_channels = x
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.classifier(out)


class VotingLayer(nn.Module):
    """A fixed average over groups of ``voting_size`` outputs."""

    def __init__(self, voting_size=10):
        super().__init__()
        self.voting_size = voting_size

    def forward(self, x):
        return nn.functional.avg_pool1d(x.unsqueeze(1), self.voting_size, self.voting_size).squeeze(1)


class CIFAR10Net(nn.Module):
    """Six 3x3 convolutions (two MaxPools), fc 2048, 100 spiking outputs voted down to 10."""

    def __init__(self, channels=256):
        super().__init__()
        convs = []
        for i in range(6):
            convs += [nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1), nn.BatchNorm2d(channels)]
            convs.append(nn.ReLU(inplace=True))
            if i in (2, 5):
                convs.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*convs)
        self.fc7 = nn.Linear(channels * 8 * 8, 2048)
        self.sn7 = nn.ReLU(inplace=True)
        self.fc8 = nn.Linear(2048, 100)
        self.sn8 = nn.ReLU(inplace=True)
        self.voting = VotingLayer(10)

    def forward(self, x):
        x = self.features(x).flatten(1)
        x = self.sn8(self.fc8(self.sn7(self.fc7(x))))
        return self.voting(x)


def vgg13(num_classes=10):
    return VGG(VGG13, num_classes)


def cifarnet(channels=256):
    return CIFAR10Net(channels)

"""The ECAPA-TDNN network, re-written from SpeechBrain's definition with its parameter names.

ECAPA-TDNN: Desplanques, Thienpondt & Demuynck 2020, "ECAPA-TDNN: Emphasized Channel
Attention, Propagation and Aggregation in TDNN Based Speaker Verification"; reference code
``speechbrain.lobes.models.ECAPA_TDNN`` (v1.1.2). Same module and parameter names, so that a
SpeechBrain checkpoint's state dict loads with strict key matching (the checkpoint format,
the features and the adapter are in :mod:`speechlens.models.ecapa`).

Tensors are ``(batch, channel, frame)`` inside the network, as in SpeechBrain; convolutions
pad "same" by reflection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from speechlens.models.base import AdapterError


class Conv1d(nn.Module):
    """SpeechBrain's ``Conv1d`` (``skip_transpose``): "same" reflection padding, then ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        total = dilation * (kernel_size - 1)
        if total % 2:
            raise AdapterError(f"ecapa: kernel {kernel_size}, dilation {dilation}: uneven padding")
        self.pad = total // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channel, frame)`` -> ``(batch, out_channel, frame)``."""
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode="reflect")
        return self.conv(x)


class BatchNorm1d(nn.Module):
    """SpeechBrain's ``BatchNorm1d``: the torch module under the name ``norm``."""

    def __init__(self, input_size: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(input_size, eps=1e-5, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    """conv -> ReLU -> batch norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation)
        self.activation = nn.ReLU()
        self.norm = BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.conv(x)))


class Res2NetBlock(nn.Module):
    """Channels split in ``scale`` groups; group ``i > 0`` is a TDNN block of itself plus
    the previous group's output (group 0 passes through)."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int):
        super().__init__()
        if channels % scale:
            raise AdapterError(f"ecapa: {channels} channels do not split in {scale} groups")
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(
            [TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i, part in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 0:
                y = part
            elif i == 1:
                y = self.blocks[0](part)
            else:
                y = self.blocks[i - 1](part + y)
            out.append(y)
        return torch.cat(out, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation: channel gates from the mean over all frames of the utterance."""

    def __init__(self, channels: int, se_channels: int):
        super().__init__()
        self.conv1 = Conv1d(channels, se_channels, 1)
        self.relu = nn.ReLU()
        self.conv2 = Conv1d(se_channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)
        return self.sigmoid(self.conv2(self.relu(self.conv1(s)))) * x


class SERes2NetBlock(nn.Module):
    """TDNN (1x1) -> Res2Net -> TDNN (1x1) -> SE, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, scale: int, se: int, kernel: int, dilation: int):
        super().__init__()
        self.tdnn1 = TDNNBlock(cin, cout, 1, 1)
        self.res2net_block = Res2NetBlock(cout, scale, kernel, dilation)
        self.tdnn2 = TDNNBlock(cout, cout, 1, 1)
        self.se_block = SEBlock(cout, se)
        self.shortcut = Conv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + residual


def _stats(x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Weighted mean and std over frames (dim 2), concatenated on the channel axis."""
    mean = (weights * x).sum(2)
    std = torch.sqrt((weights * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(eps))
    return torch.cat([mean, std], dim=1)


class AttentiveStatisticsPooling(nn.Module):
    """Channel-wise attention over frames (with the utterance's mean and std as global
    context), then the attention-weighted mean and std."""

    def __init__(self, channels: int, attention_channels: int, global_context: bool):
        super().__init__()
        self.global_context = global_context
        self.tdnn = TDNNBlock(channels * (3 if global_context else 1), attention_channels, 1, 1)
        self.tanh = nn.Tanh()
        self.conv = Conv1d(attention_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        attn = x
        if self.global_context:
            stats = _stats(x, torch.full_like(x[:, :1], 1.0 / n))
            mean, std = stats.chunk(2, dim=1)
            attn = torch.cat([x, mean[..., None].expand_as(x), std[..., None].expand_as(x)], 1)
        weights = F.softmax(self.conv(self.tanh(self.tdnn(attn))), dim=2)
        return _stats(x, weights).unsqueeze(2)


class ECAPA_TDNN(nn.Module):  # noqa: N801 (SpeechBrain's name)
    """SpeechBrain's ECAPA-TDNN; :meth:`layers` returns every frame-level layer too."""

    def __init__(
        self,
        input_size: int,
        lin_neurons: int = 192,
        channels: Sequence[int] = (512, 512, 512, 512, 1536),
        kernel_sizes: Sequence[int] = (5, 3, 3, 3, 1),
        dilations: Sequence[int] = (1, 2, 3, 4, 1),
        attention_channels: int = 128,
        res2net_scale: int = 8,
        se_channels: int = 128,
        global_context: bool = True,
    ):
        super().__init__()
        c, k, d = list(channels), list(kernel_sizes), list(dilations)
        self.blocks = nn.ModuleList([TDNNBlock(input_size, c[0], k[0], d[0])])
        for i in range(1, len(c) - 1):
            self.blocks.append(
                SERes2NetBlock(c[i - 1], c[i], res2net_scale, se_channels, k[i], d[i])
            )
        self.mfa = TDNNBlock(c[-2] * (len(c) - 2), c[-1], k[-1], d[-1])
        self.asp = AttentiveStatisticsPooling(c[-1], attention_channels, global_context)
        self.asp_bn = BatchNorm1d(c[-1] * 2)
        self.fc = Conv1d(c[-1] * 2, lin_neurons, 1)
        self.max_pad = max(m.pad for m in self.modules() if isinstance(m, Conv1d))

    def layers(self, feats: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``feats`` ``(batch, frame, mel)`` -> frame-level layers ``[(batch, frame, width)]``
        (blocks' outputs, then the MFA output) and embeddings ``(batch, lin_neurons)``."""
        x = feats.transpose(1, 2)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        outs.append(x)
        embedding = self.fc(self.asp_bn(self.asp(x)))[..., 0]
        return [o.transpose(1, 2) for o in outs], embedding

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """SpeechBrain's output: ``(batch, 1, lin_neurons)``."""
        return self.layers(feats)[1].unsqueeze(1)

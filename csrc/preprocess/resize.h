// Area ("box") downscaling of 8-bit frames to the agent's observation size, with RGB(A) -> luma.
//
// This is the observation preprocessing every pixel environment runs once per tick (Atari 210x160 grey
// -> 84x84; Game Boy 144x160, one channel of its grey RGBA screen -> 84x84), so it is on the env
// driver's hot path. Each output pixel averages exactly the input area it covers (what OpenCV's
// INTER_AREA computes). The weights are computed once at construction in 16.16 fixed point, with the
// same number of taps for every output index (zero weights pad the short ones), so the loops have no
// data-dependent bounds. A vertical pass over whole rows (contiguous, vectorizes) fills a 16-bit 8.8
// scratch of out_h x in_w, then a horizontal pass runs over only out_h rows. RGB(A) input goes through a
// luma pass into a grey scratch first; a grey input may have any pixel stride.
//
// Threading: a call allocates nothing, takes no lock and touches only the caller's buffers and the
// object's scratch, so one AreaResize serves one thread (one per env).
//
// Precision: the weights of each output pixel sum to exactly 65536 in each pass, so a constant image stays
// exactly constant, and the result is the exact (real-valued) area average rounded to nearest, give or
// take 1/50 of a grey level (weight rounding and the 8.8 intermediate).
// Luma is ITU-R BT.601 in 8.8 fixed point: (77 R + 150 G + 29 B + 128) >> 8.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/errors.h"

namespace rtcore {

class AreaResize {
 public:
  AreaResize(int in_h, int in_w, int out_h, int out_w) : in_h_(in_h), in_w_(in_w), out_h_(out_h), out_w_(out_w) {
    if (in_h <= 0 || in_w <= 0 || out_h <= 0 || out_w <= 0)
      throw InvalidArgument("resize sizes must be positive, got " + std::to_string(in_h) + "x" +
                            std::to_string(in_w) + " -> " + std::to_string(out_h) + "x" + std::to_string(out_w));
    if (out_h > in_h || out_w > in_w)
      throw InvalidArgument("area resize only shrinks: " + std::to_string(in_h) + "x" + std::to_string(in_w) +
                            " -> " + std::to_string(out_h) + "x" + std::to_string(out_w));
    rows_ = taps(in_h, out_h);
    cols_ = taps(in_w, out_w);
    grey_.assign(static_cast<std::size_t>(in_h) * in_w, 0);
    mid_.assign(static_cast<std::size_t>(out_h) * in_w, 0);
    acc_.assign(static_cast<std::size_t>(in_w), 0);
  }

  int in_h() const { return in_h_; }
  int in_w() const { return in_w_; }
  int out_h() const { return out_h_; }
  int out_w() const { return out_w_; }

  // src: in_h rows of in_w pixels of `channels` bytes (1 = grey, 3 = RGB, 4 = RGBA; the alpha byte is
  // ignored), rows `row_stride` bytes apart. dst: out_h x out_w bytes, contiguous.
  void operator()(const std::uint8_t* src, int channels, std::ptrdiff_t row_stride, std::uint8_t* dst) {
    switch (channels) {
      case 1: vertical<1>(src, row_stride, 1); break;
      case 3: luma<3>(src, row_stride); vertical<1>(grey_.data(), in_w_, 1); break;
      case 4: luma<4>(src, row_stride); vertical<1>(grey_.data(), in_w_, 1); break;
      default: throw InvalidArgument("frame has " + std::to_string(channels) + " channels, expected 1, 3 or 4");
    }
    horizontal(dst);
  }

  // A grey frame whose pixels are `pixel_stride` bytes apart (e.g. one channel of an RGBA frame whose
  // palette is grey, as the Game Boy's is: R = G = B = luma).
  void grey_strided(const std::uint8_t* src, std::ptrdiff_t pixel_stride, std::ptrdiff_t row_stride, std::uint8_t* dst) {
    if (pixel_stride < 1) throw InvalidArgument("pixel stride must be >= 1, got " + std::to_string(pixel_stride));
    if (pixel_stride == 1) {
      vertical<1>(src, row_stride, 1);
    } else {
      vertical<0>(src, row_stride, pixel_stride);
    }
    horizontal(dst);
  }

 private:
  // Along one axis: output index o averages inputs first[o] .. first[o] + k - 1 with 16.16 weights
  // w[o * k + j] that sum to exactly 65536 (zero where the area does not reach).
  struct Axis {
    int k = 0;
    std::vector<int> first;
    std::vector<std::uint32_t> w;
  };

  static Axis taps(int n_in, int n_out) {
    const double scale = static_cast<double>(n_in) / n_out;
    std::vector<int> lo_idx(n_out), hi_idx(n_out);
    Axis a;
    for (int o = 0; o < n_out; ++o) {
      lo_idx[o] = static_cast<int>(std::floor(o * scale));
      hi_idx[o] = std::min(n_in, static_cast<int>(std::ceil((o + 1) * scale - 1e-9)));  // exclusive
      a.k = std::max(a.k, hi_idx[o] - lo_idx[o]);
    }
    a.first.resize(n_out);
    a.w.assign(static_cast<std::size_t>(n_out) * a.k, 0);
    for (int o = 0; o < n_out; ++o) {
      const double lo = o * scale, hi = (o + 1) * scale;
      const int first = std::min(lo_idx[o], n_in - a.k);  // keep all k taps inside the input
      a.first[o] = first;
      std::uint32_t* w = a.w.data() + static_cast<std::size_t>(o) * a.k;
      int sum = 0, big = 0;
      for (int i = lo_idx[o]; i < hi_idx[o]; ++i) {
        const double cover = std::min(hi, i + 1.0) - std::max(lo, static_cast<double>(i));
        const int wi = static_cast<int>(std::lround(65536.0 * cover / scale));
        w[i - first] = static_cast<std::uint32_t>(wi);
        sum += wi;
        if (wi > static_cast<int>(w[big])) big = i - first;
      }
      // Rounding may leave the sum a little off 65536: settle the difference on the largest weight.
      w[big] = static_cast<std::uint32_t>(static_cast<int>(w[big]) + 65536 - sum);
    }
    return a;
  }

  template <int C>
  void luma(const std::uint8_t* src, std::ptrdiff_t row_stride) {
    for (int y = 0; y < in_h_; ++y) {
      const std::uint8_t* __restrict p = src + y * row_stride;
      std::uint8_t* __restrict g = grey_.data() + static_cast<std::size_t>(y) * in_w_;
      for (int x = 0; x < in_w_; ++x)
        g[x] = static_cast<std::uint8_t>((77u * p[x * C] + 150u * p[x * C + 1] + 29u * p[x * C + 2] + 128u) >> 8);
    }
  }

  // k input rows -> one row of in_w values in 8.8 fixed point, rounded (at most 255 << 8: fits 16 bits).
  // PS: pixel stride known at compile time (1: contiguous, vectorizes), or 0: `pixel_stride`.
  template <int PS>
  void vertical(const std::uint8_t* src, std::ptrdiff_t row_stride, std::ptrdiff_t pixel_stride) {
    const std::ptrdiff_t ps = PS ? PS : pixel_stride;
    const int k = rows_.k, n = in_w_;
    std::uint32_t* __restrict acc = acc_.data();  // restrict: uint8_t pointers may alias anything otherwise
    for (int o = 0; o < out_h_; ++o) {
      const std::uint32_t* w = rows_.w.data() + static_cast<std::size_t>(o) * k;
      for (int x = 0; x < n; ++x) acc[x] = 128u;
      for (int j = 0; j < k; ++j) {
        const std::uint32_t wj = w[j];
        const std::uint8_t* __restrict row = src + (rows_.first[o] + j) * row_stride;
        for (int x = 0; x < n; ++x) acc[x] += wj * row[x * ps];  // <= 255 << 16
      }
      std::uint16_t* __restrict out = mid_.data() + static_cast<std::size_t>(o) * n;
      for (int x = 0; x < n; ++x) out[x] = static_cast<std::uint16_t>(acc[x] >> 8);
    }
  }

  // k scratch values -> one byte, rounding the 8.24 sum to nearest (at most 65280 * 65536 + 2^23 < 2^32).
  // Unrolled for the usual tap counts (2..4: Atari and Game Boy to 84x84 use 3).
  void horizontal(std::uint8_t* dst) const {
    switch (cols_.k) {
      case 1: horizontal_k<1>(dst); break;
      case 2: horizontal_k<2>(dst); break;
      case 3: horizontal_k<3>(dst); break;
      case 4: horizontal_k<4>(dst); break;
      default: horizontal_k<0>(dst); break;
    }
  }

  template <int K>  // K = 0: any cols_.k
  void horizontal_k(std::uint8_t* dst) const {
    const int k = K ? K : cols_.k;
    const std::uint32_t* weights = cols_.w.data();
    const int* first = cols_.first.data();
    for (int y = 0; y < out_h_; ++y) {
      const std::uint16_t* __restrict row = mid_.data() + static_cast<std::size_t>(y) * in_w_;
      std::uint8_t* __restrict out = dst + static_cast<std::size_t>(y) * out_w_;
      for (int o = 0; o < out_w_; ++o) {
        const std::uint32_t* w = weights + static_cast<std::size_t>(o) * k;
        const std::uint16_t* p = row + first[o];
        std::uint32_t acc = 1u << 23;
        for (int j = 0; j < k; ++j) acc += w[j] * p[j];
        out[o] = static_cast<std::uint8_t>(acc >> 24);
      }
    }
  }

  int in_h_, in_w_, out_h_, out_w_;
  Axis rows_, cols_;
  std::vector<std::uint8_t> grey_;     // luma of an RGB(A) frame
  std::vector<std::uint16_t> mid_;     // after the vertical pass: out_h x in_w, 8.8 fixed point
  std::vector<std::uint32_t> acc_;     // one row of vertical sums
};

}  // namespace rtcore

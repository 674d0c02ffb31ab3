// AreaResize: exact on constant images and integer ratios, the real-valued area average rounded to
// nearest (give or take 1/50 level) otherwise, luma folded in for RGB(A), strided rows honoured, bad arguments rejected.
#include "preprocess/resize.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "check.h"

using rtcore::AreaResize;

namespace {

// The exact area average, in doubles, of a grey image.
std::vector<double> reference(const std::vector<std::uint8_t>& img, int ih, int iw, int oh, int ow) {
  std::vector<double> out(static_cast<std::size_t>(oh) * ow, 0.0);
  const double sy = static_cast<double>(ih) / oh, sx = static_cast<double>(iw) / ow;
  for (int oy = 0; oy < oh; ++oy)
    for (int ox = 0; ox < ow; ++ox) {
      double acc = 0;
      for (int y = 0; y < ih; ++y) {
        const double cy = std::min((oy + 1) * sy, y + 1.0) - std::max(oy * sy, static_cast<double>(y));
        if (cy <= 0) continue;
        for (int x = 0; x < iw; ++x) {
          const double cx = std::min((ox + 1) * sx, x + 1.0) - std::max(ox * sx, static_cast<double>(x));
          if (cx <= 0) continue;
          acc += cy * cx * img[static_cast<std::size_t>(y) * iw + x];
        }
      }
      out[static_cast<std::size_t>(oy) * ow + ox] = acc / (sy * sx);
    }
  return out;
}

std::vector<std::uint8_t> random_image(int n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<std::uint8_t> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<std::uint8_t>(d(gen));
  return v;
}

}  // namespace

TEST(constant_image_stays_constant) {
  for (int value : {0, 1, 127, 254, 255}) {
    AreaResize r(210, 160, 84, 84);
    std::vector<std::uint8_t> img(210 * 160, static_cast<std::uint8_t>(value)), out(84 * 84, 7);
    r(img.data(), 1, 160, out.data());
    for (auto v : out) CHECK_EQ(static_cast<int>(v), value);
  }
}

TEST(integer_ratio_is_exact_block_mean) {
  AreaResize r(8, 6, 4, 3);  // 2x2 blocks
  auto img = random_image(8 * 6, 1);
  std::vector<std::uint8_t> out(12);
  r(img.data(), 1, 6, out.data());
  for (int oy = 0; oy < 4; ++oy)
    for (int ox = 0; ox < 3; ++ox) {
      int s = 0;
      for (int dy = 0; dy < 2; ++dy)
        for (int dx = 0; dx < 2; ++dx) s += img[(2 * oy + dy) * 6 + 2 * ox + dx];
      CHECK(std::abs(out[oy * 3 + ox] - s / 4.0) <= 0.5 + 1e-9);
    }
}

TEST(atari_and_gameboy_sizes_round_the_exact_average) {
  const int sizes[][2] = {{210, 160}, {144, 160}, {250, 160}};
  for (const auto& s : sizes) {
    AreaResize r(s[0], s[1], 84, 84);
    auto img = random_image(s[0] * s[1], 2);
    std::vector<std::uint8_t> out(84 * 84);
    r(img.data(), 1, s[1], out.data());
    const auto ref = reference(img, s[0], s[1], 84, 84);
    double worst = 0;
    for (std::size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::abs(out[i] - ref[i]));
    CHECK(worst <= 0.52);
  }
}

TEST(rgba_is_converted_to_bt601_luma) {
  const int ih = 144, iw = 160;
  std::vector<std::uint8_t> rgba(static_cast<std::size_t>(ih) * iw * 4), grey(static_cast<std::size_t>(ih) * iw);
  auto noise = random_image(ih * iw * 4, 3);
  for (int i = 0; i < ih * iw; ++i) {
    for (int c = 0; c < 4; ++c) rgba[i * 4 + c] = noise[i * 4 + c];
    grey[i] = static_cast<std::uint8_t>((77u * rgba[i * 4] + 150u * rgba[i * 4 + 1] + 29u * rgba[i * 4 + 2] + 128u) >> 8);
  }
  AreaResize a(ih, iw, 84, 84), b(ih, iw, 84, 84);
  std::vector<std::uint8_t> out_rgba(84 * 84), out_grey(84 * 84);
  a(rgba.data(), 4, iw * 4, out_rgba.data());
  b(grey.data(), 1, iw, out_grey.data());
  CHECK(out_rgba == out_grey);
}

TEST(row_stride_is_honoured) {
  const int ih = 20, iw = 10, pad = 6;
  auto img = random_image(ih * iw, 4);
  std::vector<std::uint8_t> padded(static_cast<std::size_t>(ih) * (iw + pad), 0xAB);
  for (int y = 0; y < ih; ++y)
    for (int x = 0; x < iw; ++x) padded[y * (iw + pad) + x] = img[y * iw + x];
  AreaResize a(ih, iw, 7, 3), b(ih, iw, 7, 3);
  std::vector<std::uint8_t> o1(21), o2(21);
  a(img.data(), 1, iw, o1.data());
  b(padded.data(), 1, iw + pad, o2.data());
  CHECK(o1 == o2);
}

TEST(strided_grey_equals_contiguous_grey) {
  const int ih = 144, iw = 160;
  auto rgba = random_image(ih * iw * 4, 6);
  std::vector<std::uint8_t> r_only(static_cast<std::size_t>(ih) * iw);
  for (int i = 0; i < ih * iw; ++i) r_only[i] = rgba[i * 4];
  AreaResize a(ih, iw, 84, 84), b(ih, iw, 84, 84);
  std::vector<std::uint8_t> o1(84 * 84), o2(84 * 84);
  a.grey_strided(rgba.data(), 4, iw * 4, o1.data());
  b(r_only.data(), 1, iw, o2.data());
  CHECK(o1 == o2);
  CHECK_THROWS(a.grey_strided(rgba.data(), 0, iw * 4, o1.data()), rtcore::InvalidArgument);
}

TEST(identity_size_copies) {
  AreaResize r(5, 7, 5, 7);
  auto img = random_image(35, 5);
  std::vector<std::uint8_t> out(35);
  r(img.data(), 1, 7, out.data());
  CHECK(out == img);
}

TEST(bad_arguments_throw) {
  CHECK_THROWS(AreaResize(0, 10, 5, 5), rtcore::InvalidArgument);
  CHECK_THROWS(AreaResize(10, 10, 20, 5), rtcore::InvalidArgument);
  AreaResize r(4, 4, 2, 2);
  std::vector<std::uint8_t> img(32), out(4);
  CHECK_THROWS(r(img.data(), 2, 8, out.data()), rtcore::InvalidArgument);
}

int main() { return rtcore_test::run_all(); }

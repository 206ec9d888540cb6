#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "apps/data/dataset.h"
#include "temp_file.h"

using namespace longattn::data;
using data_test::expect_data_error;
using data_test::TempFile;

namespace {

Dataset small(bool paired) {
  Dataset d;
  d.task = "toy";
  d.vocab_size = 10;
  d.num_classes = 3;
  d.paired = paired;
  d.examples.push_back({{5, 6, 7}, paired ? std::vector<int32_t>{8} : std::vector<int32_t>{}, 2});
  d.examples.push_back({{9}, paired ? std::vector<int32_t>{3, 4, 5, 6} : std::vector<int32_t>{}, 0});
  return d;
}

}  // namespace

TEST(Batch, PadsToLongestWithMasksAndCls) {
  const Dataset d = small(false);
  Batch b = make_batch(d, {1, 0});
  EXPECT_EQ(b.batch, 2);
  EXPECT_EQ(b.length, 3);
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{9, 0, 0, 5, 6, 7}));
  EXPECT_EQ(b.mask, (std::vector<uint8_t>{1, 0, 0, 1, 1, 1}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(b.real_tokens, 4);
  BatchOptions o;
  o.prepend_cls = true;
  o.fixed_length = 5;
  b = make_batch(d, {0}, o);
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{kClsToken, 5, 6, 7, 0}));
  EXPECT_EQ(b.mask, (std::vector<uint8_t>{1, 1, 1, 1, 0}));
  o.fixed_length = 3;  // CLS + 3 tokens do not fit
  EXPECT_THROW(make_batch(d, {0}, o), std::invalid_argument);
  EXPECT_THROW(make_batch(d, {2}), std::out_of_range);
}

TEST(Batch, PairedDatasetsPadEachDocument) {
  const Batch b = make_batch(small(true), {0, 1});
  EXPECT_EQ(b.length, 3);
  EXPECT_EQ(b.length2, 4);
  EXPECT_EQ(b.tokens2, (std::vector<int32_t>{8, 0, 0, 0, 3, 4, 5, 6}));
  EXPECT_EQ(b.mask2, (std::vector<uint8_t>{1, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(b.real_tokens, 9);
}

TEST(DatasetFile, RoundTrip) {
  for (bool paired : {false, true}) {
    Dataset d = small(paired);
    if (!paired) d.height = 1, d.width = 3, d.examples[1].tokens = {1, 2, 3};
    TempFile f(paired ? "rt_paired.tsv" : "rt.tsv");
    write_dataset(d, f.path);
    const Dataset r = read_dataset(f.path);
    EXPECT_EQ(r.task, d.task);
    EXPECT_EQ(r.vocab_size, d.vocab_size);
    EXPECT_EQ(r.num_classes, d.num_classes);
    EXPECT_EQ(r.height, d.height);
    EXPECT_EQ(r.width, d.width);
    EXPECT_EQ(r.paired, d.paired);
    ASSERT_EQ(r.size(), d.size());
    for (size_t i = 0; i < d.size(); ++i) {
      EXPECT_EQ(r.examples[i].tokens, d.examples[i].tokens);
      EXPECT_EQ(r.examples[i].tokens2, d.examples[i].tokens2);
      EXPECT_EQ(r.examples[i].label, d.examples[i].label);
    }
  }
}

TEST(DatasetFile, MalformedFilesNameFileLineReason) {
  const std::string header = "#longattn-dataset v1 task=t vocab_size=10 num_classes=3 height=0 width=0 paired=0 count=2\n";
  TempFile ok("ok.tsv", header + "1\t4 5\n2\t9\n");
  EXPECT_EQ(read_dataset(ok.path).size(), 2u);
  TempFile magic("magic.tsv", "label\ttokens\n");
  expect_data_error([&] { read_dataset(magic.path); }, magic.path, 1, "not a longattn dataset file");
  TempFile lacks("lacks.tsv", "#longattn-dataset v1 task=t vocab_size=10\n");
  expect_data_error([&] { read_dataset(lacks.path); }, lacks.path, 1, "header lacks num_classes=");
  TempFile truncated("trunc.tsv", header + "1\t4 5\n");
  expect_data_error([&] { read_dataset(truncated.path); }, truncated.path, 2, "promises 2 examples, the file holds 1 (truncated?)");
  TempFile range("range.tsv", header + "1\t4 5\n2\t9 10\n");
  expect_data_error([&] { read_dataset(range.path); }, range.path, 3, "token id 10 outside [0, 10)");
  TempFile label("label.tsv", header + "3\t4 5\n2\t9\n");
  expect_data_error([&] { read_dataset(label.path); }, label.path, 2, "label 3 outside [0, 3)");
  TempFile spaces("spaces.tsv", header + "1\t4  5\n2\t9\n");
  expect_data_error([&] { read_dataset(spaces.path); }, spaces.path, 2, "token id '' is not a non-negative integer");
  TempFile fields("fields.tsv", header + "1\t4 5\t6\n2\t9\n");
  expect_data_error([&] { read_dataset(fields.path); }, fields.path, 2, "expected 2 tab-separated fields");
  TempFile negative("neg.tsv", header + "1\t4 -5\n2\t9\n");
  expect_data_error([&] { read_dataset(negative.path); }, negative.path, 2, "token id '-5'");
  expect_data_error([&] { read_dataset("/nonexistent.tsv"); }, "/nonexistent.tsv", 0, "cannot open");
}

TEST(DatasetFile, WriteRefusesInvalidDatasets) {
  Dataset d = small(false);
  d.examples[0].tokens[0] = 10;
  TempFile f("invalid.tsv");
  EXPECT_THROW(write_dataset(d, f.path), std::invalid_argument);
}

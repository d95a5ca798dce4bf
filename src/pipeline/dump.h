// `--dump DIR`: collects named tensors (the reference data's names) and writes them to
// DIR/dump.safetensors, so `chromacpp compare` can hold a run against the reference layer by layer.
// Pipeline-level values are put() directly; model intermediates arrive through the tracer
// interface while the pipeline has it installed (the first step only, under step.0.pos. / step.0.neg. —
// a full trace of every step would be hundreds of GB at 1024²).
#pragma once
#include <map>
#include <string>

#include "tensor/trace.h"

namespace chroma::pipeline {

class Dump : public Tracer {
 public:
  explicit Dump(std::string dir);
  void put(const std::string& name, const Tensor& value) { values_[name] = to_host(value); }  // kept on the host
  void record(const std::string& name, const Tensor& value) override { put(name, value); }
  // Writes DIR/dump.safetensors (atomically). Returns the path.
  std::string write() const;

 private:
  std::string dir_;
  std::map<std::string, Tensor> values_;
};

}  // namespace chroma::pipeline

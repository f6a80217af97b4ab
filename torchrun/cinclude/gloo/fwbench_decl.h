// fwbench_decl.h: the few gloo declarations that libtorch's
// torch/csrc/distributed/c10d/ProcessGroupGloo.hpp needs to compile.
//
// libtorch ships ProcessGroupGloo.hpp and the compiled gloo inside
// libtorch_cpu.so, but not gloo's headers. torchrun's parallel.cc only
// constructs a c10d::ProcessGroupGloo (whose constructor, destructor, vtable
// and device factories live in libtorch_cpu.so) and talks to it through
// c10d::Backend; it never touches a gloo object itself. Every gloo type reaches
// ProcessGroupGloo's layout through a std::shared_ptr or std::unique_ptr, so
// its size and member offsets do not depend on these declarations. What the
// header's inline code names is declared here and nothing else: the types as
// incomplete classes, gloo::Context::setTimeout, and the virtual interface of
// gloo::rendezvous::Store that the header's GlooStore overrides (parallel.cc
// never instantiates GlooStore). Written for libtorch 2.11's header; a libtorch
// whose header needs more fails to compile here, loudly.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport

namespace rendezvous {
class Store {
 public:
  virtual ~Store();
  virtual void set(const std::string &key, const std::vector<char> &data) = 0;
  virtual std::vector<char> get(const std::string &key) = 0;
  virtual void wait(const std::vector<std::string> &keys) = 0;
  virtual void wait(const std::vector<std::string> &keys, const std::chrono::milliseconds &timeout) = 0;
};
}  // namespace rendezvous

}  // namespace gloo

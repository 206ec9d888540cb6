// Names of the feature maps (compiled once: not a hot path, see kernels/CMakeLists.txt).
#include <cstring>
#include <initializer_list>

#include "kernels/kernelized_attention/feature_maps.h"

namespace longattn::kernels {

const char* feature_map_name(FeatureMap f) {
  switch (f) {
    case FeatureMap::elu: return "elu";
    case FeatureMap::relu: return "relu";
    case FeatureMap::sikf: return "sikf";
    case FeatureMap::favor: return "favor";
  }
  return "?";
}

bool feature_map_from_name(const char* name, FeatureMap* out) {
  for (FeatureMap f : {FeatureMap::elu, FeatureMap::relu, FeatureMap::sikf, FeatureMap::favor})
    if (std::strcmp(name, feature_map_name(f)) == 0) {
      *out = f;
      return true;
    }
  return false;
}

}  // namespace longattn::kernels

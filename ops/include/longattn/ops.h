// All longattn operators for C++ users: link longattn::ops (find_package(longattn)).
#pragma once
#include "longattn/softmax_attention.h"
#include "longattn/kernelized_attention.h"
#include "longattn/toeplitz.h"
#include "longattn/kernelized_rpe.h"
#include "longattn/shatter.h"
#include "longattn/yoso.h"
#include "longattn/dropout.h"

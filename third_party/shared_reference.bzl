"""@shared: DeepMind's kinetics-i3d ground truth.

The tests read <repo>/../shared/reference/... relative to their own file.
Under Bazel a test's file is <runfiles>/i3d_exercise/tests/test_x.py, so that
path is <runfiles>/shared/reference/..., which is where the files of an
external repository named "shared" appear in the runfiles tree. This rule
makes that repository from the directory beside the checkout (or
$I3D_SHARED_DIR), in or out of the sandbox. Unlike new_local_repository it
tolerates a missing directory: `bazel build //...` still works, and only the
tests that need the data fail, as they would under pytest.
"""

_BUILD = """\
filegroup(
    name = "reference",
    srcs = glob(["reference/**"]),
    visibility = ["//visibility:public"],
)
"""

def _shared_reference_impl(rctx):
    shared = rctx.os.environ.get("I3D_SHARED_DIR")
    if not shared:
        # The checkout's parent directory, then shared/.
        workspace = rctx.path(Label("@//:WORKSPACE")).dirname
        shared = str(workspace.dirname) + "/shared"
    for name in ("reference",):
        directory = rctx.path(shared + "/" + name)
        if directory.exists:
            rctx.symlink(directory, name)
        else:
            print("%s does not exist: tests that need its data will " %
                  directory + "fail (set I3D_SHARED_DIR to the shared " +
                  "directory).")
    rctx.file("BUILD", _BUILD)
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)

shared_reference = repository_rule(
    implementation = _shared_reference_impl,
    environ = ["I3D_SHARED_DIR"],
    local = True,
)

"""i3d-exercise: two-stream I3D (Sonnet 2) for exercise-form video classification."""

import setuptools

setuptools.setup(
    name="i3d-exercise",
    version="0.1.0",
    description=("Two-stream Inflated 3D ConvNets in TensorFlow 2 / Sonnet 2, "
                 "transfer-learned from Kinetics to classify exercise form."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["i3d", "i3d.*", "i3d_demo"]),
    package_data={"i3d": ["label_maps/*.txt", "label_maps/LICENSE.kinetics-i3d"]},
    py_modules=["train", "evaluate", "predict", "prepare_data"],
    install_requires=[
        "tensorflow==2.21.*",
        "dm-sonnet==2.0.2",
        "tensorflow-hub==0.16.1",
        # tensorflow_hub imports tf_keras; it must match TF's minor version.
        "tf_keras==2.21.*",
        # TensorFlow 2.21's wheel no longer pulls TensorBoard; summaries need it.
        "tensorboard==2.21.*",
        "numpy>=1.26",
        "opencv-contrib-python-headless==5.0.0.93",
        "absl-py>=2.1",
    ],
    extras_require={"test": ["pytest>=8"]},
)
